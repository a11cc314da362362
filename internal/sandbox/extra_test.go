package sandbox_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/google/go-cmp/cmp"
)

// Extra mounts: a read-only and a read-write bind, a tmpfs and a file, all
// at targets that do not exist: the command sees them, the root is left
// as it was (no stubs; the directories that got one keep the time of its
// creation, as in BuildKit), and a write through the rw bind lands in its
// source.
func TestExtraMounts(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	ro, rw := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(ro, "in.txt"), "from host\n")
	setTimes(t, root, time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC))
	before := treeOf(t, root)
	spec := shSpec(root, "cat /mnt/ro/in.txt; touch /mnt/ro/x 2>/dev/null || echo ro; echo w > /deep/rw/out; "+
		"echo t > /tmp/t/f && cat /tmp/t/f; cat /run/secrets/s; ls -ln /run/secrets/s | cut -c1-10")
	spec.Binds = []sandbox.Bind{{Source: ro, Target: "/mnt/ro", ReadOnly: true}, {Source: rw, Target: "/deep/rw"}}
	spec.Tmpfs = []sandbox.Tmpfs{{Target: "/tmp/t", Size: 1 << 20}}
	spec.Files = []sandbox.File{{Target: "/run/secrets/s", Data: []byte("hush\n"), Mode: 0o400}}
	got := mustRun(t, spec)
	if want := "from host\nro\nt\nhush\n-r--------\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if diff := cmp.Diff(withoutTimes(before, ".", "etc"), withoutTimes(treeOf(t, root), ".", "etc")); diff != "" {
		t.Errorf("root changed (-before +after):\n%s", diff)
	}
	if b := readHostFile(t, filepath.Join(rw, "out")); b != "w\n" {
		t.Errorf("rw bind source has %q", b)
	}
}

// A tmpfs has BuildKit's options (nosuid; ro when asked; size in bytes,
// shown in k) plus nodev (no device node a RUN makes can be opened: see
// mountDev), and one at a system mount point (/dev/shm, /etc/hosts) is
// mounted instead of the system mount, as runc does: the command sees one
// mount there, not two stacked (BuildKit testMountTmpfsSize).
func TestExtraMountTmpfsOptions(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	hosts := filepath.Join(t.TempDir(), "hosts")
	writeFile(t, hosts, "10.0.0.1 mine\n")
	spec := shSpec(root, "grep -E ' /(dev/shm|t|u) ' /proc/mounts | cut -d' ' -f2,4; grep -c ' /etc/hosts ' /proc/mounts; cat /etc/hosts")
	spec.Tmpfs = []sandbox.Tmpfs{{Target: "/dev/shm", Size: 128 << 20}, {Target: "/t", ReadOnly: true}, {Target: "/u", Size: 1 << 20}}
	spec.Binds = []sandbox.Bind{{Source: hosts, Target: "/etc/hosts", ReadOnly: true}}
	got := mustRun(t, spec)
	want := "/dev/shm rw,nosuid,nodev,relatime,size=131072k\n" +
		"/t ro,nosuid,nodev,relatime\n" +
		"/u rw,nosuid,nodev,relatime,size=1024k\n" +
		"1\n" +
		"10.0.0.1 mine\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	// Without a RUN mount there, /dev/shm is runc's default.
	if got := mustRun(t, shSpec(root, "grep ' /dev/shm ' /proc/mounts | cut -d' ' -f1,4")); got != "shm rw,nosuid,nodev,noexec,relatime,size=65536k\n" {
		t.Errorf("default /dev/shm: %q", got)
	}
}

// A bind target whose path goes through a symlink leaving the root is
// resolved inside the root.
func TestExtraMountTargetConfined(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	victim := filepath.Join(filepath.Dir(root), "victim")
	mustMkdir(t, victim)
	symlink(t, "../../../../../"+victim, filepath.Join(root, "escape"))
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), "x")
	spec := shSpec(root, "cat /escape/m/f")
	spec.Binds = []sandbox.Bind{{Source: src, Target: "/escape/m"}}
	if got := mustRun(t, spec); got != "x" {
		t.Errorf("got %q", got)
	}
	if entries, _ := os.ReadDir(victim); len(entries) != 0 {
		t.Errorf("victim outside the root was written: %v", entries)
	}
}

func TestExtraMountValidate(t *testing.T) {
	t.Parallel()
	for name, spec := range map[string]sandbox.Spec{
		"relative": {Tmpfs: []sandbox.Tmpfs{{Target: "tmp"}}},
		"root":     {Binds: []sandbox.Bind{{Source: "/x", Target: "/"}}},
		"big file": {Files: []sandbox.File{{Target: "/s", Data: make([]byte, sandbox.MaxFileSize+1)}}},
	} {
		spec.Mounts, spec.Args = bindRoot("/nonexistent"), []string{"true"}
		if err := sandbox.Run(t.Context(), spec); !errors.Is(err, sandbox.ErrInvalidSpec) {
			t.Errorf("%s: got %v, want ErrInvalidSpec", name, err)
		}
	}
}

// Nested mounts inside a directory that parallel RUNs share (a cache mount
// at /foo/bar and another at /foo/bar/baz, as BuildKit's
// testCacheMountParallel): the inner mount point is created inside the
// shared directory by whichever RUN comes first, the others use it, and
// none removes it while another may have it mounted.
func TestNestedMountInSharedDirParallel(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	shared, inner := t.TempDir(), t.TempDir()
	errs := make(chan error, 16)
	// Made before any run starts: a busybox copy open for writing while
	// another goroutine forks would be busy (ETXTBSY) in the child.
	roots := make([]string, cap(errs))
	for i := range roots {
		roots[i] = newRootfs(t, rootfsOpts{})
	}
	for i, root := range roots {
		go func() {
			spec := shSpec(root, "test -d /foo/bar/baz && sleep 0.2 && test -d /foo/bar/baz")
			spec.Binds = []sandbox.Bind{{Source: shared, Target: "/foo/bar"}, {Source: inner, Target: "/foo/bar/baz"}}
			_, _, err := run(t.Context(), spec)
			if err != nil {
				err = fmt.Errorf("run %d: %w", i, err)
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if fi, err := os.Stat(filepath.Join(shared, "baz")); err != nil || !fi.IsDir() {
		t.Errorf("the mount point made in the shared directory: %v, %v", fi, err)
	}
}

// A File is executable (a RUN heredoc's script run by its shebang), though
// it comes from the noexec scratch tmpfs, and read-only and nodev.
func TestFileExecutable(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	spec := shSpec(root, "")
	spec.Args = []string{"/dev/pipes/EOF"}
	spec.Files = []sandbox.File{{Target: "/dev/pipes/EOF", Data: []byte("#!/bin/sh\necho ran; grep ' /dev/pipes/EOF ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1-2\n"), Mode: 0o755}}
	if got := mustRun(t, spec); got != "ran\nro,nodev\n" {
		t.Errorf("got %q", got)
	}
}

// A directory that got a mount point keeps what the command did to it:
// removing the stub does not take its time back to before the command
// (a RUN with a tmpfs at /tmp/m that writes /tmp/new leaves /tmp with
// the write's time, as in BuildKit). Under isolation chroot, a directory
// where an existing file was moved aside for the run keeps its time if
// the command left it alone, and the command's otherwise.
func TestStubParentKeepsCommandChanges(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	root := newRootfs(t, rootfsOpts{})
	mustMkdir(t, filepath.Join(root, "tmp"))
	setTimes(t, root, old)
	spec := shSpec(root, "sleep 0.01; echo x > /tmp/new")
	spec.Tmpfs = []sandbox.Tmpfs{{Target: "/tmp/m", Size: 1 << 20}}
	mustRun(t, spec)
	if fi, err := os.Stat(filepath.Join(root, "tmp")); err != nil || !fi.ModTime().After(old) {
		t.Errorf("/tmp mtime %v (%v): want the command's write's, after %v", fi.ModTime(), err, old)
	}

	for _, tc := range []struct {
		cmd     string
		changed bool
	}{{"true", false}, {"echo x > /etc/new", true}} {
		root := newRootfs(t, rootfsOpts{})
		writeFile(t, filepath.Join(root, "etc/hosts"), "image hosts\n")
		writeFile(t, filepath.Join(root, "etc/resolv.conf"), "nameserver 10.0.0.1\n")
		setTimes(t, root, old)
		mustRun(t, chrootSpec(root, tc.cmd))
		fi, err := os.Stat(filepath.Join(root, "etc"))
		if err != nil {
			t.Fatal(err)
		}
		if changed := !fi.ModTime().Equal(old); changed != tc.changed {
			t.Errorf("chroot, %q: /etc mtime %v, want changed %v", tc.cmd, fi.ModTime(), tc.changed)
		}
		if b := readHostFile(t, filepath.Join(root, "etc/hosts")); b != "image hosts\n" {
			t.Errorf("chroot, %q: /etc/hosts %q after the run", tc.cmd, b)
		}
	}
}
