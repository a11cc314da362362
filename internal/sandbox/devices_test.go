package sandbox_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/builder-dev/builder/internal/sandbox"
)

// A RUN keeps CAP_MKNOD, but a device node it makes cannot be opened:
// not in the root, /dev, a RUN tmpfs or a bind mount (all nodev), so a
// block device for a host disk is useless to it. The test uses the zero
// device (a disk may be unreadable even to the host's root, as on
// firecracker VMs). The /dev nodes the sandbox provides still work. In
// insecure mode devices are not restricted (as BuildKit's).
func TestDeviceNodesUnusable(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	disk := "c 1 5"
	root := newRootfs(t, rootfsOpts{})
	bindDir := t.TempDir()
	script := ""
	for _, dir := range []string{"/", "/dev", "/mnt/tmpfs", "/mnt/bind"} {
		p := filepath.Join(dir, "disk")
		script += fmt.Sprintf("mknod %s %s && { head -c 1 %s >/dev/null 2>&1 && echo 'OPENED %s' || echo 'refused %s'; }; rm -f %s; ", p, disk, p, p, p, p)
	}
	script += "echo x > /dev/null && head -c 4 /dev/zero | wc -c"
	spec := shSpec(root, script)
	spec.Tmpfs = []sandbox.Tmpfs{{Target: "/mnt/tmpfs"}}
	spec.Binds = []sandbox.Bind{{Source: bindDir, Target: "/mnt/bind"}}
	got := mustRun(t, spec)
	if strings.Contains(got, "OPENED") || strings.Count(got, "refused") != 4 || !strings.HasSuffix(got, "4\n") {
		t.Errorf("device nodes:\n%s", got)
	}
	spec = shSpec(root, fmt.Sprintf("mknod /disk %s && head -c 1 /disk >/dev/null && echo opened; rm -f /disk", disk))
	spec.Insecure = true
	if got := mustRun(t, spec); got != "opened\n" {
		t.Errorf("insecure mode: %q, want the device usable", got)
	}
}

// The /dev nodes of a RUN are its own, as runc makes them: a RUN that
// changes one (touch, chmod, chown) changes its node, never the host's
// (a RUN chmod 000 /dev/null would otherwise break /dev/null for the
// whole host). The probe keeps the host safe if the test fails: the mode
// and owner it sets are the ones the nodes have, and /dev/full's times
// are put back.
func TestDeviceNodesPrivate(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	before := map[string]unix.Stat_t{}
	for _, n := range []string{"/dev/null", "/dev/full", "/dev/zero"} {
		var st unix.Stat_t
		if err := unix.Stat(n, &st); err != nil {
			t.Fatal(err)
		}
		before[n] = st
	}
	t.Cleanup(func() {
		st := before["/dev/full"]
		ts := []unix.Timespec{st.Atim, st.Mtim}
		if err := unix.UtimesNano("/dev/full", ts); err != nil {
			t.Error(err)
		}
	})
	script := `touch -d '2001-02-03 04:05:06' /dev/full && chmod 666 /dev/null && chown 0:0 /dev/zero &&
ls -l --full-time /dev/full | grep -c 2001-02-03 && echo x > /dev/null && head -c 4 /dev/zero | wc -c`
	if got := mustRun(t, shSpec(root, script)); got != "1\n4\n" {
		t.Errorf("RUN's /dev: %q, want its /dev/full changed and the nodes working", got)
	}
	for n, was := range before {
		var st unix.Stat_t
		if err := unix.Stat(n, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mtim != was.Mtim || st.Ctim != was.Ctim || st.Mode != was.Mode || st.Uid != was.Uid {
			t.Errorf("the host's %s changed under a RUN: mtime %v → %v, ctime %v → %v", n,
				time.Unix(was.Mtim.Unix()), time.Unix(st.Mtim.Unix()), time.Unix(was.Ctim.Unix()), time.Unix(st.Ctim.Unix()))
		}
	}
}
