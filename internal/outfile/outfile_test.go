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
	regReal, err := filepath.EvalSymlinks(reg)
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, l := range [][2]string{{"link-reg", reg}, {"link-fifo", fifo}, {"link-null", os.DevNull}} {
		if err := os.Symlink(l[1], filepath.Join(dir, l[0])); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		path, want string
		inPlace    bool
	}{
		{filepath.Join(dir, "new"), filepath.Join(dir, "new"), false},
		{reg, regReal, false},
		{filepath.Join(dir, "link-reg"), regReal, false}, // the target is replaced, the link stays
		{os.DevNull, os.DevNull, true},
		{fifo, fifo, true},
		{filepath.Join(dir, "link-fifo"), filepath.Join(dir, "link-fifo"), true},
		{filepath.Join(dir, "link-null"), filepath.Join(dir, "link-null"), true},
	} {
		got, inPlace, err := Target(c.path)
		if err != nil || got != c.want || inPlace != c.inPlace {
			t.Errorf("Target(%s) = %s, %v, %v; want %s, %v", c.path, got, inPlace, err, c.want, c.inPlace)
		}
	}
	if _, _, err := Target(dir); err == nil {
		t.Error("Target of a directory: no error")
	}
}
