package executor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/testenv"
)

// TestCopySourceChangedAfterHash: a source file that changes after it was
// hashed for the step's key (while an earlier step ran) and before the
// copy must not go into the layer under the old key — a later build of
// the old content would get the new one from the cache. Its copy is
// refused with an error naming the file; a file only touched (new times,
// same content) still copies, through the tree writer and the
// upper-directory writer alike.
func TestCopySourceChangedAfterHash(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []struct {
		name   string
		req    copyRequest
		change string // path below the context
		direct bool   // through ApplyDirect
	}{
		{"file", copyRequest{Sources: []string{"a.txt"}, Dest: "/a.txt"}, "a.txt", false},
		{"tree", copyRequest{Sources: []string{"sub/deep"}, Dest: "/existing/"}, "sub/deep/h", false},
		{"upper", copyRequest{Sources: []string{"sub/deep"}, Dest: "/newdir/"}, "sub/deep/h", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, touchOnly := range []bool{false, true} {
				ctxDir, rootfs, _ := copySetup(t)
				p := copyPrepareIn(t, c.req, ctxDir)
				host := filepath.Join(ctxDir, c.change)
				old, err := os.ReadFile(host)
				copyCheck(t, err)
				later := time.Now().Add(time.Hour)
				if touchOnly {
					copyCheck(t, os.Chtimes(host, later, later))
				} else {
					// Same size, and the old mtime back: only the
					// content and the ctime differ.
					fi, err := os.Stat(host)
					copyCheck(t, err)
					copyCheck(t, os.WriteFile(host, []byte(strings.ToUpper(string(old))), 0o644))
					copyCheck(t, os.Chtimes(host, fi.ModTime(), fi.ModTime()))
				}
				err = copyApplyAll(t, p, rootfs, c.direct)
				switch {
				case touchOnly && err != nil:
					t.Errorf("touched only: %v", err)
				case !touchOnly && err == nil:
					t.Errorf("content changed after the hash: the copy succeeded")
				case !touchOnly && !strings.Contains(err.Error(), host+" changed during the build"):
					t.Errorf("error does not name %s as changed: %v", host, err)
				}
			}
		})
	}
}

// copyApplyAll applies p to rootfs, through ApplyDirect and its finish
// (the rootfs standing for the upper directory) when direct.
func copyApplyAll(t *testing.T, p *copyPlan, rootfs string, direct bool) error {
	t.Helper()
	if !direct {
		return p.Apply(t.Context(), rootfs)
	}
	finish, err := p.ApplyDirect(t.Context(), rootfs)
	if err != nil {
		return err
	}
	if finish == nil {
		t.Fatal("ApplyDirect left nothing for the upper directory")
	}
	return finish(t.Context(), rootfs)
}

// TestAddArchiveChangedAfterHash: a local archive changed after it was
// hashed is not extracted under the old key.
func TestAddArchiveChangedAfterHash(t *testing.T) {
	testenv.RequireRoot(t)
	ctxDir, rootfs, _ := copySetup(t)
	host := filepath.Join(ctxDir, "data.bin")
	copyCheck(t, os.WriteFile(host, copyTar(t), 0o644))
	p := copyPrepareIn(t, copyRequest{Add: true, Sources: []string{"data.bin"}, Dest: "/opt/"}, ctxDir)
	raw := copyTar(t)
	if string(raw[1024:1027]) != "bin" {
		t.Fatalf("pkg/bin's body is not at 1024: %q", raw[1024:1027])
	}
	copy(raw[1024:], "BIN") // still a valid tar, of the same size
	copyCheck(t, os.WriteFile(host, raw, 0o644))
	err := p.Apply(t.Context(), rootfs)
	if err == nil || !strings.Contains(err.Error(), host+" changed during the build") {
		t.Errorf("extract of an archive changed after its hash: %v", err)
	}
}

// TestCopySourceSwappedForSymlink: a source directory swapped for a
// symlink to a directory outside the context after the COPY was prepared
// (hashed) must not make the copy read the outside file of the same name
// into the layer: its inode is not the selected file's, and the step
// fails as a source changed (the build runs again and lists the symlink
// as a symlink).
func TestCopySourceSwappedForSymlink(t *testing.T) {
	testenv.RequireRoot(t)
	for _, direct := range []bool{false, true} {
		ctxDir, rootfs, victim := copySetup(t)
		dest := "/existing/"
		if direct {
			dest = "/newdir/"
		}
		p := copyPrepareIn(t, copyRequest{Sources: []string{"sub/deep"}, Dest: dest}, ctxDir)
		// victim/h: same name and size as sub/deep/h ("hhh").
		copyCheck(t, os.WriteFile(filepath.Join(victim, "h"), []byte("SEC"), 0o600))
		deep := filepath.Join(ctxDir, "sub", "deep")
		copyCheck(t, os.RemoveAll(deep))
		copyCheck(t, os.Symlink(victim, deep))
		err := copyApplyAll(t, p, rootfs, direct)
		if !errors.Is(err, ErrSourceChanged) || !strings.Contains(err.Error(), "replaced by another file") {
			t.Errorf("direct=%v: copy through a swapped directory: %v, want a source changed", direct, err)
		}
		if got, err := os.ReadFile(filepath.Join(rootfs, dest, "h")); err == nil && string(got) == "SEC" {
			t.Errorf("direct=%v: the outside file's content reached the layer", direct)
		}
	}
}
