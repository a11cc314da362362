package snapshot

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/builder-dev/builder/internal/testenv"
)

// TestPruneRefusesRedirect is DIFF-02: an upper dir made with redirect_dir
// or metacopy is not a faithful diff and must be refused.
func TestPruneRefusesRedirect(t *testing.T) {
	testenv.RequireRoot(t)
	for _, attr := range []string{"trusted.overlay.redirect", "trusted.overlay.metacopy"} {
		upper := t.TempDir()
		p := filepath.Join(upper, "moved")
		check(t, os.Mkdir(p, 0o755))
		check(t, unix.Lsetxattr(p, attr, []byte("/orig"), 0))
		_, err := pruneDir(context.Background(), upper, "", lowerDir{})
		if err == nil || !strings.Contains(err.Error(), attr) {
			t.Errorf("%s: got %v, want an error naming it", attr, err)
		}
	}
}

// TestLowerDirLookup resolves paths through whiteouts and opaque dirs.
func TestLowerDirLookup(t *testing.T) {
	testenv.RequireRoot(t)
	bottom, top := t.TempDir(), t.TempDir()
	for _, d := range []string{"d", "o"} {
		check(t, os.Mkdir(filepath.Join(bottom, d), 0o755))
		check(t, os.Mkdir(filepath.Join(top, d), 0o755))
	}
	check(t, os.WriteFile(filepath.Join(bottom, "d/x"), []byte("x"), 0o644))
	check(t, os.WriteFile(filepath.Join(bottom, "d/y"), []byte("y"), 0o644))
	check(t, os.WriteFile(filepath.Join(bottom, "o/hidden"), nil, 0o644))
	check(t, unix.Mknod(filepath.Join(top, "d/x"), unix.S_IFCHR, 0))
	check(t, unix.Lsetxattr(filepath.Join(top, "o"), opaqueXattr, []byte("y"), 0))
	root := rootLowerDir([]string{bottom, top})

	d, err := root.child("d")
	check(t, err)
	names, err := d.names()
	check(t, err)
	if strings.Join(names, ",") != "y" {
		t.Errorf("d lists %v, want [y] (x whited out)", names)
	}
	if _, found, _ := d.lookup("x"); found {
		t.Error("whited-out d/x found")
	}
	o, err := root.child("o")
	check(t, err)
	if _, found, _ := o.lookup("hidden"); found {
		t.Error("o/hidden found below an opaque dir")
	}
}

func TestClampTimes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	check(t, os.WriteFile(p, nil, 0o644))
	check(t, os.Symlink("f", filepath.Join(dir, "l")))
	epoch := time.Unix(1_000_000, 0)
	check(t, clampTimes(context.Background(), dir, epoch))
	for _, name := range []string{"f", "l"} {
		var st unix.Stat_t
		check(t, unix.Lstat(filepath.Join(dir, name), &st))
		if st.Mtim.Sec != epoch.Unix() || st.Mtim.Nsec != 0 {
			t.Errorf("%s mtime %v, want %v", name, time.Unix(st.Mtim.Unix()), epoch)
		}
	}
}
