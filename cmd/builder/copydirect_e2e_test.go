package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// copyDirectDockerfile copies trees into directories the step makes (their
// files go straight into the overlay's upper directory), into existing
// ones (written through the mount), into both in one step, through a
// symlink, with --chown and --chmod, and with several sources where a
// later one replaces an earlier one's file, by a file or by a directory.
const copyDirectDockerfile = `FROM busybox:fixture
COPY tree/ /app/
COPY tree/ /etc/
WORKDIR /srv/w
COPY tree/ ./
COPY a/ b/ /multi/
COPY --chown=33:44 --chmod=640 tree/ /owned/
COPY tree2/ /app/
COPY links/ /
COPY tree/ /link/sub/
COPY tree2/ tree/ /app/d1/
`

// copyNoEpochDockerfile copies into directories the step makes and into
// existing ones, every time in its layers taken from the context.
const copyNoEpochDockerfile = `FROM busybox:fixture
COPY tree/ /app/
COPY tree2/ /etc/
COPY tree2/ /app/
COPY --chown=33:44 tree/ /owned/
COPY a/ b/ /app/d1/
`

// TestE2ECopyDirectMatchesMount: the overlay snapshotter writes a COPY's
// new directories' files in the upper directory after unmounting
// (copyPlan.ApplyDirect); the copy snapshotter writes everything in one
// plain directory. Every layer must be the same, to the mtime, and the
// image must hold what the sources say.
func TestE2ECopyDirectMatchesMount(t *testing.T) {
	e := newEnv(t)
	ctx := e.context(copyDirectDockerfile, map[string]string{
		"tree/f1":        "one",
		"tree/run.sh":    "#!/bin/sh\n",
		"tree/d1/f2":     "two",
		"tree/d1/d2/f3":  "three",
		"tree2/f1":       "one again",
		"tree2/new/f4":   "four",
		"tree2/d1/f5":    "five",
		"a/x":            "a's x, a file",
		"a/same":         "from a",
		"a/y/z":          "a's z",
		"b/x/inner":      "b's x is a directory",
		"b/same":         "from b",
		"b/y/w":          "b's w",
		"tree/d1/.empty": "",
	})
	for _, dir := range []string{"tree/d1/empty", "tree2/empty", "links"} {
		if err := os.MkdirAll(filepath.Join(ctx, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(ctx, "tree/run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"links/link": "/app", "tree/d1/ln": "f2", "tree2/dangling": "nowhere"} {
		if err := os.Symlink(target, filepath.Join(ctx, name)); err != nil {
			t.Fatal(err)
		}
	}
	// Old, distinct mtimes (SOURCE_DATE_EPOCH keeps them and clamps the
	// times of the directories the steps change): a directory must end
	// with its source's mtime whichever way its files were written.
	var paths []string
	if err := filepath.WalkDir(ctx, func(p string, d fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	slices.Reverse(paths) // children before their directory
	for i, p := range paths {
		mt := time.Date(2001, 2, 3, 4, 5, i, 0, time.UTC)
		ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
	e.own(ctx)
	// Without SOURCE_DATE_EPOCH (every time then comes from the context):
	// one source per step, into new directories and into existing ones.
	e.write(ctx, "Dockerfile.noepoch", copyNoEpochDockerfile)
	snapshottersAgree(e, ctx, "--network", "none", "--no-cache", "-f", filepath.Join(ctx, "Dockerfile.noepoch"))
	img := snapshottersAgree(e, ctx, "--network", "none", "--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000")
	want := map[string]string{ // path → content ("" for anything but a file)
		"/app/f1":           "one again", // tree2 over tree in /app
		"/app/new/f4":       "four",
		"/app/d1/f2":        "two",
		"/app/d1/f5":        "five",
		"/app/d1/d1/f5":     "five", // COPY tree2/ tree/ /app/d1/
		"/app/d1/d1/f2":     "two",
		"/app/d1/empty":     "",
		"/app/dangling":     "",
		"/app/sub/d1/d2/f3": "three", // through the /link symlink
		"/etc/d1/d2/f3":     "three", // new directories in the base's /etc
		"/etc/passwd":       "",
		"/srv/w/run.sh":     "#!/bin/sh\n",
		"/srv/w/d1/f2":      "two",
		"/multi/x/inner":    "b's x is a directory", // replaces a's file x
		"/multi/same":       "from b",
		"/multi/y/z":        "a's z",
		"/multi/y/w":        "b's w",
		"/owned/d1/f2":      "two",
	}
	for p, content := range want {
		en := img.tree[p]
		switch {
		case en == nil:
			t.Errorf("%s: missing", p)
		case en.Type == "file" && content != "" && string(en.Content) != content:
			t.Errorf("%s: %q, want %q", p, en.Content, content)
		}
	}
	for p, typ := range map[string]string{"/multi/x": "dir", "/link": "symlink", "/app/d1/ln": "symlink", "/app/empty": "dir"} {
		if en := img.tree[p]; en != nil && en.Type != typ {
			t.Errorf("%s: a %s, want a %s", p, en.Type, typ)
		}
	}
	if en := img.tree["/owned/d1/f2"]; en != nil && (en.UID != 33 || en.GID != 44 || en.Mode&0o777 != 0o640) {
		t.Errorf("/owned/d1/f2: %d:%d %o, want 33:44 640", en.UID, en.GID, en.Mode)
	}
	if en := img.tree["/app/run.sh"]; en != nil && en.Mode&0o777 != 0o755 {
		t.Errorf("/app/run.sh: mode %o, want 755", en.Mode)
	}
}

// TestE2ECopyDirectKilled: a build killed while its COPY writes files into
// the overlay's upper directory (after the unmount) leaves a consistent
// store with nothing committed, the next command removes the half-written
// snapshot, and the next build writes the whole layer.
func TestE2ECopyDirectKilled(t *testing.T) {
	e := newEnv(t)
	const n = 8000
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("tree/d%02d/f%05d", i%40, i)] = strings.Repeat(string(rune('a'+i%26)), 8192+i%512)
	}
	ctx := e.context("FROM busybox:fixture\nCOPY tree/ /app/\n", files)
	e.own(ctx)
	cmd := e.command(t.Context(), "--root", e.root, "build", "--progress", "plain", "-t", "killed:1", ctx)
	// The files appear in the snapshot's upper directory only once the
	// root is unmounted: kill the build as soon as some are there.
	pattern := filepath.Join(e.root, "active", "*", "*", "upper", "app", "d*", "f*")
	signalAfter(t, cmd, waitForGlob(t.Context(), pattern), syscall.SIGKILL)
	e.waitNoProcesses()
	checkStore(t, e.root)
	if _, _, err := e.run("images"); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(e.root, "active", "*", "*")); len(left) > 0 {
		t.Errorf("snapshots left after the next command: %v", left)
	}
	dest := filepath.Join(e.dir, "out")
	e.build(ctx, "-t", "killed:1", "-o", "type=local,dest="+dest)
	var got int
	if err := filepath.WalkDir(filepath.Join(dest, "app"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			got++
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Errorf("the rebuilt /app holds %d files, want %d", got, n)
	}
	wantFileContent(t, filepath.Join(dest, "app", "d07", "f00007"), strings.Repeat("h", 8192+7))
	checkStore(t, e.root)
}

// waitForGlob returns a channel closed once pattern matches a file.
func waitForGlob(ctx context.Context, pattern string) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for ctx.Err() == nil {
			if m, _ := filepath.Glob(pattern); len(m) > 0 {
				close(ch)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return ch
}
