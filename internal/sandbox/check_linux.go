package sandbox

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// CheckMounts reports whether this process may mount: it mounts a tmpfs
// on a fresh directory and unmounts it. The process must run in a private
// mount namespace. In an unprivileged container AppArmor or the lack of
// CAP_SYS_ADMIN refuse it even in a user namespace; RUN then needs
// IsolationChroot.
func CheckMounts() error {
	dir, err := os.MkdirTemp("", "builder-mount-check-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4k"); err != nil {
		return fmt.Errorf("mount a tmpfs: %w", err)
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount a tmpfs: %w", err)
	}
	return nil
}
