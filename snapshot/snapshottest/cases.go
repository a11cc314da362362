package snapshottest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/snapshot"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// Case is one change made in a snapshot over the base layer, and the
// entries its layer tar must have (see Entries).
type Case struct {
	Name   string
	Change func(t *testing.T, root string)
	Want   []string
}

const dirChanged = " dir 0755 0:0"

// capNetRaw is a revision-2 security.capability value: cap_net_raw
// permitted and effective.
const capNetRaw = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

// Cases are the conformance cases, DIFF-01..04 among them.
var Cases = []Case{
	{"nothing", func(t *testing.T, root string) {}, nil},
	{"create", func(t *testing.T, root string) {
		writeFile(t, root, "new.txt", "hello", 0o644)
	}, []string{`new.txt file 0644 0:0 "hello"`}},
	{"modify", func(t *testing.T, root string) {
		writeFile(t, root, "mod", "new content!", 0o644)
	}, []string{`mod file 0644 0:0 "new content!"`}},
	{"delete file", func(t *testing.T, root string) {
		must(t, os.Remove(filepath.Join(root, "keep")))
	}, []string{".wh.keep"}},
	{"delete nested file", func(t *testing.T, root string) {
		must(t, os.Remove(filepath.Join(root, "d/sub/c")))
	}, []string{"d/" + dirChanged, "d/sub/" + dirChanged, "d/sub/.wh.c"}},
	{"delete tree", func(t *testing.T, root string) {
		must(t, os.RemoveAll(filepath.Join(root, "tree")))
	}, []string{".wh.tree"}},
	{"replace directory", func(t *testing.T, root string) {
		must(t, os.RemoveAll(filepath.Join(root, "opq")))
		mkdir(t, root, "opq", 0o755)
		writeFile(t, root, "opq/new", "n", 0o644)
	}, []string{"opq/" + dirChanged, `opq/new file 0644 0:0 "n"`, "opq/.wh.old1", "opq/.wh.old2"}}, // BuildKit's form: no opaque marker; whiteouts where the names were
	{"file becomes directory", func(t *testing.T, root string) {
		must(t, os.Remove(filepath.Join(root, "keep")))
		mkdir(t, root, "keep", 0o755)
	}, []string{"keep/" + dirChanged}},
	{"directory becomes file", func(t *testing.T, root string) {
		must(t, os.RemoveAll(filepath.Join(root, "tree")))
		writeFile(t, root, "tree", "now a file", 0o644)
	}, []string{`tree file 0644 0:0 "now a file"`}},
	{"rename", func(t *testing.T, root string) {
		must(t, os.Rename(filepath.Join(root, "ren/f"), filepath.Join(root, "ren/g")))
	}, []string{"ren/" + dirChanged, "ren/.wh.f", `ren/g file 0644 0:0 "f"`}},
	{"chmod only", func(t *testing.T, root string) {
		must(t, os.Chmod(filepath.Join(root, "chm"), 0o600))
	}, []string{`chm file 0600 0:0 "chm"`}},
	{"chmod to same mode", func(t *testing.T, root string) {
		must(t, os.Chmod(filepath.Join(root, "chm"), 0o644))
		must(t, os.Chmod(filepath.Join(root, "d"), 0o755))
	}, nil},
	{"chown only", func(t *testing.T, root string) {
		must(t, os.Lchown(filepath.Join(root, "own"), 1000, 65534))
	}, []string{`own file 0644 1000:65534 "own"`}},
	{"same size same mtime rewrite", func(t *testing.T, root string) {
		p := filepath.Join(root, "same")
		writeFile(t, root, "same", "BBBB", 0o644)
		setMtime(t, p, baseTime)
	}, []string{`same file 0644 0:0 "BBBB"`}},
	{"rewrite identical", func(t *testing.T, root string) {
		writeFile(t, root, "same", "AAAA", 0o644)
		setMtime(t, filepath.Join(root, "same"), baseTime)
	}, nil},
	{"hardlinks", func(t *testing.T, root string) {
		writeFile(t, root, "n1", "shared", 0o644)
		must(t, os.Link(filepath.Join(root, "n1"), filepath.Join(root, "n2")))
	}, []string{`n1 file 0644 0:0 "shared"`, "n2 hardlink 0644 0:0 -> n1"}},
	{"hardlink to lower file", func(t *testing.T, root string) {
		must(t, os.Link(filepath.Join(root, "lowerfile"), filepath.Join(root, "hl")))
	}, []string{`hl file 0644 0:0 "L"`}}, // lowerfile is unchanged: BuildKit's layer leaves it out
	{"symlinks", func(t *testing.T, root string) {
		symlink(t, root, "/etc/passwd", "abs")
		symlink(t, root, "../etc/passwd", "d/rel")
		symlink(t, root, "nowhere/at/all", "dangling")
	}, []string{"abs symlink 0777 0:0 -> /etc/passwd", "d/" + dirChanged,
		"d/rel symlink 0777 0:0 -> ../etc/passwd", "dangling symlink 0777 0:0 -> nowhere/at/all"}},
	{"retarget symlink", func(t *testing.T, root string) {
		must(t, os.Remove(filepath.Join(root, "lnk")))
		symlink(t, root, "mod", "lnk")
	}, []string{"lnk symlink 0777 0:0 -> mod"}},
	{"special files", func(t *testing.T, root string) {
		must(t, unix.Mkfifo(filepath.Join(root, "fifo"), 0o640))
		must(t, unix.Mknod(filepath.Join(root, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(t, unix.Chmod(filepath.Join(root, "null"), 0o666))
		makeSocket(t, filepath.Join(root, "sock"))
	}, []string{"fifo fifo 0640 0:0", "null char 0666 0:0"}},
	// A layer keeps security.capability and no other xattr, as BuildKit's
	// and Docker's layers (containerd's and moby's tar writers).
	{"setuid and xattrs", func(t *testing.T, root string) {
		p := filepath.Join(root, "suid")
		writeFile(t, root, "suid", "x", 0o644)
		must(t, unix.Lsetxattr(p, "user.b", []byte("2"), 0))
		must(t, unix.Lsetxattr(p, "security.capability", []byte(capNetRaw), 0))
		must(t, unix.Chmod(p, 0o6755))
		mkdir(t, root, "sticky", 0o755)
		must(t, unix.Chmod(filepath.Join(root, "sticky"), 0o1777))
	}, []string{"sticky/ dir 1777 0:0", `suid file 6755 0:0 "x" security.capability=` + capNetRaw}},
	{"replace tree partly", func(t *testing.T, root string) { // below a replaced directory too
		must(t, os.RemoveAll(filepath.Join(root, "tree")))
		mkdir(t, root, "tree", 0o755)
		mkdir(t, root, "tree/x", 0o755)
		writeFile(t, root, "tree/x/n", "n", 0o644)
	}, []string{"tree/" + dirChanged, "tree/.wh.t", "tree/x/" + dirChanged, `tree/x/n file 0644 0:0 "n"`, "tree/x/.wh.y"}},
	{"replace directory with the same", func(t *testing.T, root string) {
		must(t, os.RemoveAll(filepath.Join(root, "opq")))
		mkdir(t, root, "opq", 0o755)
		writeFile(t, root, "opq/old1", "1", 0o644)
		writeFile(t, root, "opq/old2", "2", 0o644)
		for _, p := range []string{"opq/old1", "opq/old2"} {
			setMtime(t, filepath.Join(root, p), baseTime)
		}
	}, nil},
	{"directory time only", func(t *testing.T, root string) { // BuildKit's differ ignores it
		setMtime(t, filepath.Join(root, "d/sub"), changeTime)
	}, nil},
	{"new tree", func(t *testing.T, root string) {
		mkdir(t, root, "a", 0o755)
		mkdir(t, root, "a/b", 0o700)
		writeFile(t, root, "a/b/c", "c", 0o600)
		writeFile(t, root, "a.txt", "a", 0o644)
	}, []string{"a" + "/" + dirChanged, "a/b/ dir 0700 0:0", `a/b/c file 0600 0:0 "c"`, `a.txt file 0644 0:0 "a"`}}, // depth first, as BuildKit's differ
}

// Run runs the conformance suite against the snapshotter newFn makes.
func Run(t *testing.T, newFn NewFunc) {
	RequireRoot(t)
	for _, c := range Cases {
		t.Run(c.Name, func(t *testing.T) {
			e := NewEnv(t, newFn)
			diffID := e.Commit("step", []string{e.Base}, c.Change)
			if diff := cmp.Diff(c.Want, Entries(t, e.Tar(diffID))); diff != "" {
				t.Errorf("layer entries (-want +got):\n%s", diff)
			}
			checkClean(t, e)
		})
	}
	t.Run("round trip", func(t *testing.T) { testRoundTrip(t, newFn) })
	t.Run("deterministic", func(t *testing.T) { testDeterministic(t, newFn) })
	t.Run("errors", func(t *testing.T) { testErrors(t, newFn) })
	t.Run("remove", func(t *testing.T) { testRemove(t, newFn) })
	t.Run("view", func(t *testing.T) { testView(t, newFn) })
	t.Run("stacked", func(t *testing.T) { testStacked(t, newFn) })
	t.Run("repeated layers", func(t *testing.T) { testRepeatedLayers(t, newFn) })
	t.Run("windows", func(t *testing.T) { testWindows(t, newFn) })
}

// DiffIDs commits every case and returns case name → layer diffID, so two
// snapshotters can be shown to make identical layers.
func DiffIDs(t *testing.T, newFn NewFunc) map[string]string {
	out := map[string]string{}
	for _, c := range Cases {
		e := NewEnv(t, newFn)
		out[c.Name] = e.Commit("step", []string{e.Base}, c.Change)
	}
	return out
}

// checkClean asserts no active snapshot directory and no mount is left.
func checkClean(t *testing.T, e *Env) {
	t.Helper()
	entries, err := os.ReadDir(e.Root)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range entries {
		t.Errorf("left in snapshotter root: %s", de.Name())
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mountinfo), "\n") {
		if strings.Contains(line, e.tmp) {
			t.Errorf("mount left: %s", line)
		}
	}
}

func testErrors(t *testing.T, newFn NewFunc) {
	e := NewEnv(t, newFn)
	ctx := context.Background()
	if _, err := e.Sn.Prepare(ctx, "k", []string{e.Base}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Sn.Prepare(ctx, "k", []string{e.Base}); !errors.Is(err, snapshot.ErrExists) {
		t.Errorf("second Prepare: got %v, want ErrExists", err)
	}
	if _, err := e.Sn.Commit(ctx, "unknown"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Commit of unknown key: got %v, want ErrNotFound", err)
	}
	if err := e.Sn.Remove(ctx, "unknown"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Remove of unknown key: got %v, want ErrNotFound", err)
	}
	missing := "sha256:" + strings.Repeat("0", 64)
	if _, err := e.Sn.Prepare(ctx, "m", []string{missing}); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Prepare over missing layer: got %v, want ErrNotFound", err)
	}
	must(t, e.Sn.Remove(ctx, "k"))
	checkClean(t, e)
}

func testRemove(t *testing.T, newFn NewFunc) {
	e := NewEnv(t, newFn)
	target := e.MountKey("gone", []string{e.Base})
	writeFile(t, target, "junk", "junk", 0o644)
	e.Unmount(target)
	before, err := e.Layers.List(context.Background())
	must(t, err)
	must(t, e.Sn.Remove(context.Background(), "gone"))
	after, err := e.Layers.List(context.Background())
	must(t, err)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("Remove changed the layer store (-before +after):\n%s", diff)
	}
	checkClean(t, e)
	// The key is free again.
	e.Commit("gone", []string{e.Base}, func(*testing.T, string) {})
}

func testView(t *testing.T, newFn NewFunc) {
	e := NewEnv(t, newFn)
	second := e.Commit("second", []string{e.Base}, Cases[1].Change)
	for _, parents := range [][]string{nil, {e.Base}, {e.Base, second}} {
		mounts, err := e.Sn.View(context.Background(), "view", parents)
		must(t, err)
		target, err := os.MkdirTemp(e.tmp, "view-")
		must(t, err)
		for _, m := range mounts {
			must(t, m.Mount(target))
		}
		err = os.WriteFile(filepath.Join(target, "x"), nil, 0o644)
		if !errors.Is(err, unix.EROFS) {
			t.Errorf("write in view over %d layers: got %v, want EROFS", len(parents), err)
		}
		if len(parents) == 2 {
			if _, err := os.Stat(filepath.Join(target, "new.txt")); err != nil {
				t.Errorf("view over two layers: %v", err)
			}
		}
		e.Unmount(target)
		must(t, e.Sn.Remove(context.Background(), "view"))
	}
	checkClean(t, e)
}
