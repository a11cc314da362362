package executor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/buildcontext"
)

func TestCopyInputs(t *testing.T) {
	t.Parallel()
	ctxDir, _, _ := copySetup(t)
	c, err := buildcontext.Open(ctxDir, nil)
	copyCheck(t, err)
	inputs := func() []string {
		p, err := copyPrepare(t.Context(), copyRequest{Context: c, Sources: []string{"sub", "globdir/*.go", "a.txt"}, Dest: "/x/"})
		copyCheck(t, err)
		var out []string
		for _, in := range p.Inputs() {
			out = append(out, in.Path+" "+in.Type+" "+in.Digest+" "+in.Link)
		}
		return out
	}
	before := strings.Join(inputs(), "\n")
	for _, want := range []string{"0/sub dir", "0/sub/lnk symlink  f", "0/sub/hl hardlink  0/sub/f", "1/globdir/one.go file sha256:", "2/a.txt file sha256:"} {
		if !strings.Contains(before, want) {
			t.Errorf("inputs lack %q:\n%s", want, before)
		}
	}
	copyCheck(t, os.Chtimes(filepath.Join(ctxDir, "a.txt"), time.Now(), time.Now()))
	if after := strings.Join(inputs(), "\n"); after != before {
		t.Errorf("mtime change altered inputs:\n%s\n---\n%s", before, after)
	}
	copyCheck(t, os.WriteFile(filepath.Join(ctxDir, "a.txt"), []byte("AAA"), 0o644))
	if after := strings.Join(inputs(), "\n"); after == before {
		t.Error("content change did not alter inputs")
	}
	p, err := copyPrepare(t.Context(), copyRequest{Context: c, Sources: []string{"a.txt"}, Dest: "x", Workdir: "/w", Chmod: "755"})
	copyCheck(t, err)
	got := map[string]string{}
	for _, f := range p.Fields() {
		got[f.Name] = f.Value
	}
	if got["dest"] != "/w/x" || got["flag.chmod"] != "755" {
		t.Errorf("fields %v", got)
	}
}
