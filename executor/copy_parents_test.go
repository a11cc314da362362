package executor

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/internal/testenv"
)

func TestCopyParentsInputs(t *testing.T) {
	t.Parallel()
	ctxDir, _, _ := copySetup(t)
	c, err := buildcontext.Open(ctxDir, nil)
	copyCheck(t, err)
	prepare := func(srcs ...string) ([]string, map[string]string) {
		p, err := copyPrepare(t.Context(), copyRequest{Context: c, Sources: srcs, Dest: "/x/", Parents: true})
		copyCheck(t, err)
		var in []string
		for _, f := range p.Inputs() {
			in = append(in, f.Path+" "+f.Type)
		}
		fields := map[string]string{}
		for _, f := range p.Fields() {
			fields[f.Name] = f.Value
		}
		return in, fields
	}
	in, fields := prepare("sub/deep/h", "sub/f")
	want := []string{"0/sub dir", "0/sub/deep dir", "0/sub/deep/h file", "1/sub dir", "1/sub/f file"}
	if strings.Join(in, "\n") != strings.Join(want, "\n") {
		t.Errorf("inputs:\n%s\nwant:\n%s", strings.Join(in, "\n"), strings.Join(want, "\n"))
	}
	if fields["flag.parents"] != "true" || fields["source.0.pivot.sub/deep/h"] != "." {
		t.Errorf("fields %v", fields)
	}
	_, pivoted := prepare("sub/./deep/h", "sub/f")
	if pivoted["source.0.pivot.sub/deep/h"] != "sub" {
		t.Errorf("a pivot does not reach the key: %v", pivoted)
	}
}

// TestCopyParentsExistingDirMode: a directory of a --parents source that
// already exists at the destination (from the image) takes its source
// directory's mode and keeps its owner, as buildkitd leaves it; one reached
// through an absolute symlink is resolved inside the root, and nothing
// outside it changes.
func TestCopyParentsExistingDirMode(t *testing.T) {
	testenv.RequireRoot(t)
	ctxDir, rootfs, victim := copySetup(t)
	if err := os.MkdirAll(filepath.Join(rootfs, "pp", "priv"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(rootfs, "pp", "priv"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(rootfs, "pp", "priv"), 3, 4); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(victim, 0o751); err != nil {
		t.Fatal(err)
	}
	// /ps/priv -> the victim's host path: inside the root it names
	// <rootfs><victim>, which does not exist.
	if err := os.MkdirAll(filepath.Join(rootfs, "ps"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(rootfs, "ps", "priv")); err != nil {
		t.Fatal(err)
	}
	copyCheck(t, copyRun(t, copyRequest{Sources: []string{"priv/p"}, Dest: "/pp/", Parents: true}, ctxDir, rootfs))
	copyCheck(t, copyRun(t, copyRequest{Sources: []string{"priv/p"}, Dest: "/ps/", Parents: true}, ctxDir, rootfs))
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(rootfs, "pp", "priv"), &st); err != nil {
		t.Fatal(err)
	}
	if got := [3]uint32{st.Mode & 0o7777, st.Uid, st.Gid}; got != [3]uint32{0o700, 3, 4} {
		t.Errorf("/pp/priv: mode %04o owner %d:%d, want 0700 3:4", got[0], got[1], got[2])
	}
	fi, err := os.Stat(victim)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o751 {
		t.Errorf("the victim directory outside the root changed mode: %v", fi.Mode())
	}
}
