package sandbox_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

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
