package snapshot

import (
	"context"
	"os"
	"path/filepath"
	"slices"
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

// TestPruneListsLikeCollect: the commit serializes the entries its prune
// walk kept instead of listing the upper directory again, so that listing
// must be collectEntries' exactly — same entries in the same order with
// the stats they have after the prune (dropping an entry resets its
// directory's times and moves its ctime; removing overlay xattrs moves the
// entry's) — and may claim "no xattrs" only of entries without any a
// layer keeps.
func TestPruneListsLikeCollect(t *testing.T) {
	testenv.RequireRoot(t)
	lower, upper := t.TempDir(), t.TempDir()
	for _, d := range []string{lower, upper} {
		check(t, os.MkdirAll(filepath.Join(d, "etc/keep"), 0o755))
		check(t, os.MkdirAll(filepath.Join(d, "opq"), 0o755))
	}
	old := time.Unix(1_600_000_000, 0)
	for _, d := range []string{lower, upper} {
		for _, f := range []string{"etc/same", "etc/keep/same", "opq/x"} {
			p := filepath.Join(d, f)
			check(t, os.WriteFile(p, []byte("same"), 0o644))
			check(t, os.Chtimes(p, old, old))
		}
	}
	check(t, os.WriteFile(filepath.Join(lower, "etc/gone"), []byte("g"), 0o644))
	check(t, os.WriteFile(filepath.Join(upper, "etc/changed"), []byte("new"), 0o644))
	check(t, os.MkdirAll(filepath.Join(upper, "app/sub"), 0o755))
	check(t, os.WriteFile(filepath.Join(upper, "app/sub/f"), []byte("f"), 0o644))
	check(t, os.WriteFile(filepath.Join(upper, "app/capped"), []byte("c"), 0o755))
	check(t, unix.Lsetxattr(filepath.Join(upper, "app/capped"), "security.capability", []byte(CapXattrForTest()), 0))
	check(t, unix.Lsetxattr(filepath.Join(upper, "app/sub/f"), "user.note", []byte("v"), 0)) // not a layer's
	check(t, unix.Lsetxattr(filepath.Join(upper, "app/sub/f"), "trusted.overlay.origin", []byte("x"), 0))
	check(t, unix.Mknod(filepath.Join(upper, "etc/gone"), unix.S_IFCHR, 0))
	check(t, unix.Lsetxattr(filepath.Join(upper, "opq"), opaqueXattr, []byte("y"), 0))
	check(t, os.Symlink("sub/f", filepath.Join(upper, "app/link")))
	for _, d := range []string{"etc/keep", "etc", "opq"} {
		for _, root := range []string{lower, upper} {
			check(t, os.Chtimes(filepath.Join(root, d), old, old))
		}
	}

	pr := pruner{upper: upper, listed: &listing{at: time.Now()}}
	if _, err := pr.dir(context.Background(), "", rootLowerDir([]string{lower}), false); err != nil {
		t.Fatal(err)
	}
	got := pr.listed.sorted()
	want, err := collectEntries(context.Background(), upper)
	check(t, err)
	var gotNames, wantNames []string
	for _, e := range got {
		gotNames = append(gotNames, e.name)
	}
	for _, e := range want {
		wantNames = append(wantNames, e.name)
	}
	if strings.Join(gotNames, " ") != strings.Join(wantNames, " ") {
		t.Fatalf("prune listed\n  %v\ncollect lists\n  %v", gotNames, wantNames)
	}
	for _, n := range []string{"etc/same", "etc/keep/", "etc/keep/same"} {
		if slices.Contains(gotNames, n) {
			t.Errorf("unchanged %s listed", n)
		}
	}
	for i, e := range got {
		w := want[i]
		if e.key != w.key || e.kind != w.kind || e.src != w.src || (e.kind == kindFile && !sameStat(&e.st, &w.st)) {
			t.Errorf("%s: listed %+v, collect has %+v", e.name, e, w)
		}
		if e.kind != kindFile || !e.noXattrs {
			continue
		}
		if xs, err := layerXattrs(e.src); err != nil || len(xs) > 0 {
			t.Errorf("%s: listed without xattrs, has %v (%v)", e.name, xs, err)
		}
	}
	for _, e := range got {
		if e.name == "app/capped" && e.noXattrs {
			t.Error("app/capped listed without xattrs, has security.capability")
		}
	}
}

// TestSameEntryTimes: BuildKit's differ's time rule. A file is changed
// when its mtime differs at all, even within the same second with the
// same bytes; a directory whose time alone differs is not.
func TestSameEntryTimes(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	check(t, os.WriteFile(a, []byte("same"), 0o644))
	check(t, os.WriteFile(b, []byte("same"), 0o644))
	da, db := filepath.Join(dir, "da"), filepath.Join(dir, "db")
	check(t, os.Mkdir(da, 0o755))
	check(t, os.Mkdir(db, 0o755))
	base := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	same := func(p, q string, tp, tq time.Time) bool {
		t.Helper()
		check(t, os.Chtimes(p, tp, tp))
		check(t, os.Chtimes(q, tq, tq))
		var sp, sq unix.Stat_t
		check(t, unix.Lstat(p, &sp))
		check(t, unix.Lstat(q, &sq))
		ok, err := sameEntry(p, &sp, q, &sq)
		check(t, err)
		return ok
	}
	if !same(a, b, base.Add(7), base.Add(7)) {
		t.Error("files with the same bytes and time: changed")
	}
	if same(a, b, base, base.Add(5*time.Millisecond)) {
		t.Error("same bytes, rewritten within the same second: unchanged")
	}
	if !same(da, db, base, base.Add(time.Hour)) {
		t.Error("directories differing in time alone: changed")
	}
}

// TestWalkLiveSkipsRemoved: what another process removes from the store
// while `builder du` walks it is skipped, where walkTree (a layer being
// committed, which nothing else touches) reports it.
func TestWalkLiveSkipsRemoved(t *testing.T) {
	for _, live := range []bool{false, true} {
		dir := t.TempDir()
		for _, d := range []string{"a", "b/sub", "c/sub"} {
			check(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
			check(t, os.WriteFile(filepath.Join(dir, d, "f"), []byte("x"), 0o644))
		}
		var seen []string
		err := walkDir(context.Background(), dir, live, func(p string, st *unix.Stat_t) error {
			rel, _ := filepath.Rel(dir, p)
			seen = append(seen, rel)
			switch rel {
			case "a/f": // b goes after it was listed, c/sub once c was read
				check(t, os.RemoveAll(filepath.Join(dir, "b")))
			case "c/sub/f":
				check(t, os.RemoveAll(filepath.Join(dir, "c", "sub")))
			}
			return nil
		})
		if !live {
			if err == nil {
				t.Error("walkTree: no error for an entry removed during the walk")
			}
			continue
		}
		if err != nil {
			t.Fatalf("walkLive: %v", err)
		}
		if want := []string{"a/f", "a", "c/sub/f", "c/sub", "c"}; !slices.Equal(seen, want) {
			t.Errorf("walkLive saw %v, want %v", seen, want)
		}
	}
}
