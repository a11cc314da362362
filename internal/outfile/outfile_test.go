package outfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestTarget(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "reg")
	if err := os.WriteFile(reg, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, l := range [][2]string{{"link-reg", reg}, {"link-fifo", fifo}, {"link-null", os.DevNull}, {"dangling", "nowhere"}} {
		if err := os.Symlink(l[1], filepath.Join(dir, l[0])); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]bool{
		"new": false, "reg": false, "link-reg": false, "dangling": false, // replaced (a link, not its target)
		"fifo": true, "link-fifo": true, "link-null": true, os.DevNull: true, // written in place
	} {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, name)
		}
		if got, err := Target(p); err != nil || got != want {
			t.Errorf("Target(%s) = %v, %v; want %v", name, got, err, want)
		}
	}
	if _, err := Target(dir); err == nil {
		t.Error("Target of a directory: no error")
	}
}
