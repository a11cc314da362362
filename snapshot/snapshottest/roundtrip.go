package snapshottest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/snapshot"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// roundTripSkip are cases that conflict with others when all run in one
// snapshot, and two whose change BuildKit's layers leave out: a hardlink
// to a lower file (the lower file is unchanged, so the extracted tree has
// two files where the live one had two names of one) and a directory's
// time alone (also that of a directory made again the same).
var roundTripSkip = map[string]bool{
	"file becomes directory": true, "directory becomes file": true, "rewrite identical": true,
	"replace directory with the same": true,
	"hardlink to lower file":          true, "directory time only": true,
}

// testRoundTrip is DIFF-05: extracting the base tar and then the diff tar
// gives the tree that was live in the snapshot.
func testRoundTrip(t *testing.T, newFn NewFunc) {
	e := NewEnv(t, newFn)
	target := e.MountKey("all", []string{e.Base})
	for _, c := range Cases {
		if !roundTripSkip[c.Name] {
			c.Change(t, target)
		}
	}
	fixTimes(t, target)
	live := Manifest(t, target)
	e.Unmount(target)
	layer, err := e.Sn.Commit(context.Background(), "all")
	must(t, err)

	out := t.TempDir()
	for _, id := range []string{e.Base, layer.DiffID} {
		if _, err := snapshot.Apply(context.Background(), out, bytes.NewReader(e.Tar(id))); err != nil {
			t.Fatalf("apply %s: %v", id, err)
		}
	}
	if diff := cmp.Diff(live, Manifest(t, out)); diff != "" {
		t.Errorf("extracted tree differs from the live snapshot (-live +extracted):\n%s", diff)
	}
	checkClean(t, e)
}

// Manifest describes every entry below root (sockets excluded) with type,
// mode, owner, mtime, content digest or link target, device, layer xattrs
// and hardlink group.
func Manifest(t testing.TB, root string) []string {
	var out []string
	links := map[uint64]string{}
	var walk func(rel string)
	walk = func(rel string) {
		entries, err := os.ReadDir(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range entries {
			child := filepath.Join(rel, de.Name())
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(root, child), &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode&unix.S_IFMT == unix.S_IFSOCK {
				continue
			}
			out = append(out, describeFile(t, root, child, &st, links))
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				walk(child)
			}
		}
	}
	walk("")
	return out
}

func describeFile(t testing.TB, root, rel string, st *unix.Stat_t, links map[uint64]string) string {
	p := filepath.Join(root, rel)
	s := fmt.Sprintf("%s %o %d:%d %s", rel, st.Mode, st.Uid, st.Gid, time.Unix(st.Mtim.Sec, 0).UTC().Format(time.RFC3339))
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s += fmt.Sprintf(" sha256:%x", sha256.Sum256(data))
		if st.Nlink > 1 {
			if first, ok := links[st.Ino]; ok {
				s += " linked-to " + first
			} else {
				links[st.Ino] = rel
			}
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			t.Fatal(err)
		}
		s += " -> " + target
	case unix.S_IFCHR, unix.S_IFBLK:
		s += fmt.Sprintf(" dev %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return s + xattrString(t, p)
}

func xattrString(t testing.TB, p string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "security.capability" { // the only one a layer keeps
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var s string
	for _, name := range names {
		v := make([]byte, 4096)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatal(err)
		}
		s += fmt.Sprintf(" %s=%q", name, v[:m])
	}
	return s
}

// testDeterministic: the same change gives the same diffID, WriteTar gives
// the same bytes, and SOURCE_DATE_EPOCH clamps mtimes (also on re-read).
func testDeterministic(t *testing.T, newFn NewFunc) {
	e := NewEnv(t, newFn)
	change := Cases[1].Change
	a := e.Commit("a", []string{e.Base}, change)
	b := e.Commit("b", []string{e.Base}, change)
	if a != b {
		t.Errorf("same change gave %s and %s", a, b)
	}
	if !bytes.Equal(e.Tar(a), e.Tar(a)) {
		t.Error("WriteTar is not stable")
	}
	epoch := time.Date(2020, 6, 1, 0, 0, 0, 0, time.UTC)
	c := e.Commit("c", []string{e.Base}, change, snapshot.WithSourceDateEpoch(epoch))
	want := []string{`new.txt file 0644 0:0 "hello" mtime=2020-06-01T00:00:00Z`}
	if diff := cmp.Diff(want, Entries(t, e.Tar(c))); diff != "" {
		t.Errorf("clamped layer (-want +got):\n%s", diff)
	}
	empty := e.Commit("empty", []string{e.Base}, func(*testing.T, string) {})
	if size, err := e.Layers.Size(empty); err != nil || size != 1024 {
		t.Errorf("empty layer size = %d, %v; want 1024", size, err)
	}
	checkClean(t, e)
}

// testStacked commits over a chain whose upper layers hold whiteouts and
// opaque directories, and checks the mounted view and the next diff. A
// directory made where a lower layer has a whiteout is not opaque:
// overlayfs marks only directories made over a whiteout in the upper dir.
func testStacked(t *testing.T, newFn NewFunc) {
	e := NewEnv(t, newFn)
	l1 := e.Commit("l1", []string{e.Base}, func(t *testing.T, root string) {
		must(t, os.RemoveAll(filepath.Join(root, "tree")))
		must(t, os.RemoveAll(filepath.Join(root, "opq")))
		mkdir(t, root, "opq", 0o755)
		writeFile(t, root, "opq/new", "n", 0o644)
	})
	parents := []string{e.Base, l1}
	target := e.MountKey("l2", parents)
	for _, gone := range []string{"tree", "opq/old1"} {
		if _, err := os.Lstat(filepath.Join(target, gone)); !os.IsNotExist(err) {
			t.Errorf("%s visible through whiteout/opaque dir: %v", gone, err)
		}
	}
	mkdir(t, target, "tree", 0o755)
	must(t, os.Remove(filepath.Join(target, "opq/new")))
	writeFile(t, target, "opq/newer", "m", 0o644)
	fixTimes(t, target)
	e.Unmount(target)
	layer, err := e.Sn.Commit(context.Background(), "l2")
	must(t, err)
	want := []string{"opq/" + dirChanged, "opq/.wh.new", `opq/newer file 0644 0:0 "m"`,
		"tree/" + dirChanged}
	if diff := cmp.Diff(want, Entries(t, e.Tar(layer.DiffID))); diff != "" {
		t.Errorf("layer over whiteouts (-want +got):\n%s", diff)
	}
	checkClean(t, e)
}

// testRepeatedLayers stacks the same layer more than once, as two RUN
// steps that change nothing (or change the same thing) make, and checks
// that the next step mounts, sees the topmost copy and commits.
func testRepeatedLayers(t *testing.T, newFn NewFunc) {
	e := NewEnv(t, newFn)
	empty := func(t *testing.T, root string) {}
	same := func(t *testing.T, root string) { writeFile(t, root, "same", "s", 0o644) }
	e1 := e.Commit("e1", []string{e.Base}, empty)
	e2 := e.Commit("e2", []string{e.Base, e1}, empty)
	if e1 != e2 {
		t.Fatalf("two empty layers differ: %s, %s", e1, e2)
	}
	s1 := e.Commit("s1", []string{e.Base, e1, e2}, same)
	del := e.Commit("del", []string{e.Base, e1, e2, s1}, func(t *testing.T, root string) {
		must(t, os.Remove(filepath.Join(root, "same")))
	})
	s2 := e.Commit("s2", []string{e.Base, e1, e2, s1, del}, same)
	if s1 != s2 {
		t.Fatalf("two identical layers differ: %s, %s", s1, s2)
	}
	parents := []string{e.Base, e1, e2, s1, del, s2}
	target := e.MountKey("last", parents)
	data, err := os.ReadFile(filepath.Join(target, "same"))
	if err != nil || string(data) != "s" {
		t.Errorf("same = %q, %v; want the topmost copy's %q", data, err, "s")
	}
	writeFile(t, target, "x", "hi", 0o644)
	fixTimes(t, target)
	e.Unmount(target)
	layer, err := e.Sn.Commit(context.Background(), "last")
	must(t, err)
	if diff := cmp.Diff([]string{`x file 0644 0:0 "hi"`}, Entries(t, e.Tar(layer.DiffID))); diff != "" {
		t.Errorf("layer over repeated layers (-want +got):\n%s", diff)
	}
	checkClean(t, e)
}
