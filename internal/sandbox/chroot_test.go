package sandbox_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/sandbox"
)

// chrootSpec is shSpec under isolation chroot (the builder's network).
func chrootSpec(root, script string) sandbox.Spec {
	s := shSpec(root, script)
	s.Isolation, s.Network = sandbox.IsolationChroot, sandbox.NetworkHost
	return s
}

// Isolation chroot places /etc files, secret files and /dev nodes only for
// the command's life: afterwards the root is byte-for-byte what it was,
// whether the entries were missing or there (moved aside and back), and
// time-for-time but for the directories that got a stub (as BuildKit's
// runtime creates mount points, and its cleaner leaves their time).
func TestChrootLeavesRootAsItWas(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	cases := map[string]rootCase{
		"bare root":     {func(t *testing.T, root string) { os.RemoveAll(filepath.Join(root, "etc")) }, []string{"."}},
		"etc, no hosts": {func(t *testing.T, root string) {}, []string{".", "etc"}},
		"image files": {func(t *testing.T, root string) {
			writeFile(t, filepath.Join(root, "etc/hosts"), "image hosts\n")
			mustMkdir(t, filepath.Join(root, "dev"))
			writeFile(t, filepath.Join(root, "dev/null"), "not a device\n")
			mustMkdir(t, filepath.Join(root, "run/secrets"))
			writeFile(t, filepath.Join(root, "run/secrets/s"), "image secret\n")
		}, []string{"dev", "etc"}},
		"hostile link": {func(t *testing.T, root string) {
			symlink(t, "../../../../victim/hosts", filepath.Join(root, "etc/hosts"))
		}, []string{".", "etc"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			root := newRootfs(t, rootfsOpts{})
			victim := filepath.Join(filepath.Dir(root), "victim")
			mustMkdir(t, victim)
			tc.prepare(t, root)
			setTimes(t, root, time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC))
			before := treeOf(t, root)
			spec := chrootSpec(root, "cat /etc/hosts /run/secrets/s; test -e /etc/hostname && echo etc-hostname; echo x > /dev/null && test -c /dev/null && echo null ok")
			spec.Files = []sandbox.File{{Target: "/run/secrets/s", Data: []byte("topsecret\n"), Mode: 0o400}}
			got := mustRun(t, spec)
			for _, want := range []string{"127.0.0.1\tlocalhost buildkitsandbox\n", "topsecret\n", "null ok\n"} {
				if !strings.Contains(got, want) {
					t.Errorf("output lacks %q:\n%s", want, got)
				}
			}
			if strings.Contains(got, "etc-hostname") {
				t.Errorf("/etc/hostname placed (BuildKit has none):\n%s", got)
			}
			checkRootKept(t, before, treeOf(t, root), tc.stubbed, victim)
		})
	}
}

// Under isolation chroot the command is confined to the root, cannot
// chroot out (no CAP_SYS_CHROOT), has no /proc, runs as the requested
// user in the working directory (created), and what it starts in the
// background dies with it.
func TestChrootCommand(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	writeFile(t, filepath.Join(root, "marker"), "inside\n")
	spec := chrootSpec(root, "cat /marker; pwd; id -u; grep -c . /proc/self/status 2>&1 || echo no proc; sleep 4242 & echo started")
	spec.Cwd, spec.UID, spec.GID = "/w/d", 1000, 1000
	got := mustRun(t, spec)
	for _, want := range []string{"inside\n", "/w/d\n", "1000\n", "no proc\n", "started\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if left := hostProcesses(t, "sleep 4242"); len(left) > 0 {
		t.Errorf("background process survived: %q", left)
	}
	if fi, err := os.Stat(filepath.Join(root, "w/d")); err != nil || !fi.IsDir() {
		t.Errorf("working directory not created: %v", err)
	}
	// Root in the chroot lacks CAP_SYS_CHROOT (bit 18) in every set.
	got = mustRun(t, chrootSpec(root, "busybox chroot / true 2>&1; echo rc=$?"))
	if !strings.Contains(got, "rc=1") {
		t.Errorf("chroot inside the chroot: %q, want it refused", got)
	}
}

// What isolation chroot cannot do is refused before anything runs.
func TestChrootRefuses(t *testing.T) {
	root := newRootfs(t, rootfsOpts{})
	for name, edit := range map[string]func(*sandbox.Spec){
		"network none":    func(s *sandbox.Spec) { s.Network = sandbox.NetworkNone },
		"private network": func(s *sandbox.Spec) { s.Network = sandbox.NetworkPrivate },
		"bind":            func(s *sandbox.Spec) { s.Binds = []sandbox.Bind{{Source: root, Target: "/mnt"}} },
		"tmpfs":           func(s *sandbox.Spec) { s.Tmpfs = []sandbox.Tmpfs{{Target: "/mnt"}} },
		"insecure":        func(s *sandbox.Spec) { s.Insecure = true },
		"overlay":         func(s *sandbox.Spec) { s.Mounts[0].Type = "overlay" },
	} {
		spec := chrootSpec(root, "true")
		edit(&spec)
		if _, _, err := run(t.Context(), spec); !errors.Is(err, sandbox.ErrInvalidSpec) {
			t.Errorf("%s: err = %v, want ErrInvalidSpec", name, err)
		}
	}
}
