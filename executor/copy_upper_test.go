package executor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/internal/testenv"
)

// copyPrepareIn prepares req over the context directory ctxDir.
func copyPrepareIn(t *testing.T, req copyRequest, ctxDir string) *copyPlan {
	t.Helper()
	c, err := buildcontext.Open(ctxDir, nil)
	copyCheck(t, err)
	req.Context, req.TempDir = c, t.TempDir()
	p, err := copyPrepare(t.Context(), req)
	copyCheck(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// TestCopyApplyDirect: ApplyDirect makes the directories in the mounted
// root and leaves the files of those it made for finish, which writes them
// in the upper directory (here the same directory, as for a snapshot
// without parents) and then the directories' times.
func TestCopyApplyDirect(t *testing.T) {
	testenv.RequireRoot(t)
	ctxDir, rootfs, victim := copySetup(t)
	p := copyPrepareIn(t, copyRequest{Sources: []string{"priv", "sub/deep"}, Dest: "/newdir/"}, ctxDir)
	finish, err := p.ApplyDirect(t.Context(), rootfs)
	copyCheck(t, err)
	if finish == nil {
		t.Fatal("ApplyDirect left nothing for the upper directory")
	}
	copyVerify(t, rootfs, map[string]copyWant{
		"newdir": {typ: "dir"}, "newdir/sub": {typ: "dir", mode: 0o700},
		"newdir/p": {typ: "absent"}, "newdir/h": {typ: "absent"},
	})
	copyCheck(t, finish(t.Context(), rootfs))
	copyCheckResult(t, nil, "", rootfs, victim, map[string]copyWant{
		"newdir/p": {typ: "file", content: "ppp", mtime: true}, "newdir/h": {typ: "file", content: "hhh"},
		"newdir/sub": {typ: "dir", mode: 0o700, mtime: true},
	})

	// Into a directory that exists, everything goes through the root.
	ctxDir, rootfs, _ = copySetup(t)
	p = copyPrepareIn(t, copyRequest{Sources: []string{"sub/deep"}, Dest: "/existing/"}, ctxDir)
	finish, err = p.ApplyDirect(t.Context(), rootfs)
	copyCheck(t, err)
	copyCheck(t, finish(t.Context(), rootfs))
	copyVerify(t, rootfs, map[string]copyWant{"existing/h": {typ: "file", content: "hhh"}})

	// A hardlink's first name may be anywhere: all through the root.
	ctxDir, rootfs, _ = copySetup(t)
	p = copyPrepareIn(t, copyRequest{Sources: []string{"sub"}, Dest: "/newdir/"}, ctxDir)
	finish, err = p.ApplyDirect(t.Context(), rootfs)
	copyCheck(t, err)
	if finish != nil {
		t.Error("ApplyDirect of a tree with hardlinks left writes for the upper directory")
	}
	copyVerify(t, rootfs, map[string]copyWant{"newdir/f": {typ: "file", content: "fff"}, "newdir/hl": {typ: "file", content: "fff"}})
}

// TestCopyApplyDirectRefusesSwappedParent: a directory made through the
// root that is a symlink by the time finish writes into the upper
// directory is refused, and nothing is written where it points.
func TestCopyApplyDirectRefusesSwappedParent(t *testing.T) {
	testenv.RequireRoot(t)
	ctxDir, rootfs, victim := copySetup(t)
	p := copyPrepareIn(t, copyRequest{Sources: []string{"sub/deep"}, Dest: "/newdir/"}, ctxDir)
	finish, err := p.ApplyDirect(t.Context(), rootfs)
	copyCheck(t, err)
	copyCheck(t, os.Remove(filepath.Join(rootfs, "newdir")))
	copyCheck(t, os.Symlink("../victim", filepath.Join(rootfs, "newdir")))
	err = finish(t.Context(), rootfs)
	if err == nil || !strings.Contains(err.Error(), "not the directory made for it") {
		t.Fatalf("finish through a swapped parent: %v, want a refusal", err)
	}
	copyVerifyVictim(t, victim)
}
