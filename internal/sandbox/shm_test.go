package sandbox

import (
	"testing"

	"golang.org/x/sys/unix"
)

// /dev/shm is runc's default without --shm-size, and with it the RUN
// tmpfs BuildKit's frontend mounts there (testShmSize): source tmpfs,
// nosuid (plus builder's nodev unless insecure), exec allowed, the size.
func TestShmMount(t *testing.T) {
	for _, tc := range []struct {
		size     int64
		insecure bool
		source   string
		flags    uintptr
		data     string
	}{
		{0, false, "shm", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=1777,size=67108864"},
		{0, true, "shm", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=1777,size=67108864"},
		{128 << 20, false, "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "size=134217728"},
		{128 << 20, true, "tmpfs", unix.MS_NOSUID, "size=134217728"},
	} {
		source, flags, data := shmMount(tc.size, tc.insecure)
		if source != tc.source || flags != tc.flags || data != tc.data {
			t.Errorf("shmMount(%d, %v) = %s, %#x, %q; want %s, %#x, %q", tc.size, tc.insecure, source, flags, data, tc.source, tc.flags, tc.data)
		}
	}
}
