package sandbox_test

import (
	"os"
	"strings"
	"testing"
)

// The system mounts are runc's, as BuildKit's RUN has them: /dev/mqueue,
// the masks' empty tmpfs without options, and /sys/fs/cgroup holding
// the RUN's cgroups read-only (writable in insecure mode).
func TestSystemMounts(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	script := `grep -E ' /dev/mqueue | /sys/firmware ' /proc/mounts | cut -d' ' -f1-4
grep -E ' /sys/fs/cgroup[/ ]' /proc/mounts | grep -E ' cgroup2? ' | cut -d' ' -f4 | cut -d, -f1 | sort -u
test -n "$(ls /sys/fs/cgroup)" || echo empty-cgroupfs`
	want := "mqueue /dev/mqueue mqueue rw,nosuid,nodev,noexec,relatime\n"
	if _, err := os.Stat("/sys/firmware"); err == nil {
		want += "tmpfs /sys/firmware tmpfs ro,relatime\n"
	}
	if got := mustRun(t, shSpec(root, script)); got != want+"ro\n" {
		t.Errorf("got\n%s\nwant\n%sro", got, want)
	}
	spec := shSpec(root, script)
	spec.Insecure = true
	want = strings.Replace(want, "tmpfs /sys/firmware tmpfs ro,relatime\n", "", 1) // not masked
	if got := mustRun(t, spec); got != want+"rw\n" {
		t.Errorf("insecure: got\n%s\nwant\n%srw", got, want)
	}
}
