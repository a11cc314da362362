package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/snapshot"
	"github.com/google/go-cmp/cmp"
)

// RUN-08: background children die with the step, which ends promptly.
func TestBackgroundProcessesKilled(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	scripts := map[string]string{
		"sleep 1357": "sleep 1357 & echo started",
		"sleep 1358": "(sleep 1358 &) ; true",
		"sleep 1359": "sleep 1359 >/dev/null 2>&1 </dev/null & exit 0",
	}
	for marker, script := range scripts {
		start := time.Now()
		mustRun(t, shSpec(root, script))
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%q took %v", script, d)
		}
		if left := hostProcesses(t, marker); len(left) > 0 {
			t.Errorf("%q left processes on the host: %q", script, left)
		}
	}
}

// Not parallel: it checks that no sandbox directory is left behind.
func TestCancelKillsEverything(t *testing.T) {
	requireRoot(t)
	root := newRootfs(t, rootfsOpts{})
	before := sandboxDirs(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	time.AfterFunc(500*time.Millisecond, cancel)
	start := time.Now()
	_, _, err := run(ctx, shSpec(root, "sleep 2468 & sleep 2469"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
	}
	for _, marker := range []string{"sleep 2468", "sleep 2469"} {
		if left := hostProcesses(t, marker); len(left) > 0 {
			t.Errorf("processes left: %q", left)
		}
	}
	// Other test packages run sandboxes at the same time: only an init
	// started by this test process counts.
	if left := childProcesses(t, sandbox.InitArg); len(left) > 0 {
		t.Errorf("sandbox init left: %q", left)
	}
	for d := range sandboxDirs(t) {
		if !before[d] {
			t.Errorf("sandbox directory %s left behind", d)
		}
	}
	mountinfo := readHostFile(t, "/proc/self/mountinfo")
	for _, s := range []string{root, "builder-sandbox-"} {
		if strings.Contains(mountinfo, s) {
			t.Errorf("host mount table mentions %s:\n%s", s, mountinfo)
		}
	}
}

// The mount points the sandbox needs are created only for the run: the
// root is byte-for-byte what it was before, and time-for-time but for the
// directories that got a mount point (stubbed): they keep the time its
// creation gave them, as BuildKit's stub cleaner leaves them.
func TestNoStubsLeft(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	cases := map[string]rootCase{
		"bare root":     {func(t *testing.T, root string) { os.RemoveAll(filepath.Join(root, "etc")) }, []string{"."}},
		"etc, no hosts": {func(t *testing.T, root string) {}, []string{".", "etc"}},
		"hostile links": {func(t *testing.T, root string) {
			// In-root dangling link (as Ubuntu's resolv.conf) and a link
			// trying to leave the root.
			symlink(t, "../run/systemd/resolv.conf", filepath.Join(root, "etc/resolv.conf"))
			symlink(t, "../../../../victim/hosts", filepath.Join(root, "etc/hosts"))
		}, []string{"."}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			root := newRootfs(t, rootfsOpts{})
			victim := filepath.Join(filepath.Dir(root), "victim")
			mustMkdir(t, victim)
			tc.prepare(t, root)
			old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
			setTimes(t, root, old)
			before := treeOf(t, root)
			got := mustRun(t, shSpec(root, "hostname; grep 127.0.0.1 /etc/hosts; ls -d /proc/1 /dev/null /sys/kernel"))
			if want := "buildkitsandbox\n127.0.0.1\tlocalhost buildkitsandbox\n/dev/null\n/proc/1\n/sys/kernel\n"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			checkRootKept(t, before, treeOf(t, root), tc.stubbed, victim)
		})
	}
}

// The upper dir of an overlay root holds only what the command changed.
func TestOverlayRoot(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	lower := newRootfs(t, rootfsOpts{noEtc: true})
	dir := t.TempDir()
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	mustMkdir(t, upper)
	mustMkdir(t, work)
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	setTimes(t, upper, old)
	opts := []string{"lowerdir=" + lower, "upperdir=" + upper, "workdir=" + work, "index=off", "redirect_dir=off", "metacopy=off"}
	spec := shSpec(lower, "echo new > /newfile; cat /etc/hosts >/dev/null")
	spec.Mounts = []snapshot.Mount{{Type: "overlay", Source: "overlay", Options: opts}}
	mustRun(t, spec)
	got := treeOf(t, upper)
	if _, ok := got["newfile"]; !ok || len(got) != 2 {
		t.Errorf("upper dir: want only . and newfile, got %q", got)
	}
	// The command wrote in the root: its time is the command's.
	if fi, err := os.Stat(upper); err != nil || !fi.ModTime().After(old) {
		t.Errorf("upper root mtime: got %v (%v), want the command's (after %v)", fi.ModTime(), err, old)
	}
}

func symlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// rootCase prepares a root, and names the directories of it that get a
// mount point stub in the run.
type rootCase struct {
	prepare func(t *testing.T, root string)
	stubbed []string
}

// checkRootKept checks that a run left the root as before: the same tree,
// but for the times of the stubbed directories, which must be new (the
// stub's creation's, as BuildKit's stub cleaner leaves them), and nothing
// written to the victim directory beside it.
func checkRootKept(t *testing.T, before, after map[string]string, stubbed []string, victim string) {
	t.Helper()
	for _, d := range stubbed {
		if after[d] == before[d] {
			t.Errorf("%s has the time it had before; want the stub's creation's", d)
		}
	}
	if diff := cmp.Diff(withoutTimes(before, stubbed...), withoutTimes(after, stubbed...)); diff != "" {
		t.Errorf("root changed (-before +after):\n%s", diff)
	}
	if entries, _ := os.ReadDir(victim); len(entries) != 0 {
		t.Errorf("victim directory outside the root was written: %v", entries)
	}
}

// withoutTimes is tree with the modification times of entries dropped:
// the directories that got a mount point stub, which keep the time its
// creation gave them (as BuildKit's stub cleaner leaves them).
func withoutTimes(tree map[string]string, entries ...string) map[string]string {
	out := maps.Clone(tree)
	for _, e := range entries {
		if v, ok := out[e]; ok {
			out[e] = v[:strings.LastIndexByte(v, ' ')]
		}
	}
	return out
}

// setTimes sets the times of every directory under root to ts, so that a
// change made within the test's own second shows.
func setTimes(t *testing.T, root string, ts time.Time) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		return os.Chtimes(p, ts, ts)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// treeOf describes every entry under root: type, mode, size, mtime, target.
func treeOf(t *testing.T, root string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		kind, size := "f", fi.Size()
		switch {
		case fi.IsDir():
			kind, size = "d", 0
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			kind = "l " + target
		}
		tree[rel] = fmt.Sprintf("%s %v %d %d", kind, fi.Mode().Perm(), size, fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// SIGTERM to the init reaches the command.
func TestSignalForwarded(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	signalled := make(chan int, 1)
	go func() {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if pid := grandparentOf("sleep 4321"); pid > 0 && pid != os.Getpid() && pid != os.Getppid() {
				signalled <- pid
				_ = syscall.Kill(pid, syscall.SIGTERM)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		signalled <- 0
	}()
	out, _, err := run(t.Context(), shSpec(root, "trap 'echo got-term; exit 7' TERM; sleep 4321 & wait"))
	if pid := <-signalled; pid == 0 {
		t.Fatal("sandbox init of sleep 4321 not found")
	}
	var ee *sandbox.ExitError
	if out != "got-term\n" || !errors.As(err, &ee) || ee.Code != 7 {
		t.Fatalf("got stdout %q, err %v; want got-term and exit code 7", out, err)
	}
}

// grandparentOf returns the host pid of the grandparent of the process whose
// command line starts with prefix, or 0.
func grandparentOf(prefix string) int {
	procs, _ := findProcesses(prefix)
	pid := ""
	for _, p := range procs {
		if id, cmdline, _ := strings.Cut(p, ": "); strings.HasPrefix(cmdline, prefix) {
			pid = id
		}
	}
	if pid == "" {
		return 0
	}
	for range 2 {
		status, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
		if err != nil {
			return 0
		}
		_, rest, _ := strings.Cut(string(status), "\nPPid:\t")
		pid, _, _ = strings.Cut(rest, "\n")
	}
	n, _ := strconv.Atoi(pid)
	return n
}
