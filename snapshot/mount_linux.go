package snapshot

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Mount mounts m on target. Overlay mounts whose option string does not fit
// in one page (mount(2)'s limit, reached at a few dozen layers) go through
// the fsopen/fsconfig API, one "lowerdir+" call per layer (Linux 6.8+).
func (m Mount) Mount(target string) error {
	switch m.Type {
	case "bind", "rbind":
		return m.mountBind(target)
	case "overlay":
		data := strings.Join(m.Options, ",")
		if len(data) < os.Getpagesize() {
			if err := unix.Mount(m.Source, target, "overlay", 0, data); err != nil {
				return fmt.Errorf("mount overlay %s: %w", target, err)
			}
			return nil
		}
		return mountOverlayFsconfig(m.Options, target)
	default:
		return fmt.Errorf("mount %s: unsupported mount type %q", target, m.Type)
	}
}

func (m Mount) mountBind(target string) error {
	flags := uintptr(unix.MS_BIND)
	if slices.Contains(m.Options, "rbind") || m.Type == "rbind" {
		flags |= unix.MS_REC
	}
	if err := unix.Mount(m.Source, target, "", flags, ""); err != nil {
		return fmt.Errorf("bind mount %s on %s: %w", m.Source, target, err)
	}
	if !slices.Contains(m.Options, "ro") {
		return nil
	}
	ro := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
	if err := unix.Mount("", target, "", ro, ""); err != nil {
		_ = Unmount(target)
		return fmt.Errorf("remount %s read-only: %w", target, err)
	}
	return nil
}

// mountOverlayFsconfig mounts an overlay with the new mount API, which has
// no limit on the total length of the lower directory list.
func mountOverlayFsconfig(options []string, target string) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("mount overlay %s: option string exceeds one page and fsopen is unavailable: %w", target, err)
	}
	defer unix.Close(fsfd)
	for _, opt := range options {
		if err := fsconfigOption(fsfd, opt); err != nil {
			return fmt.Errorf("mount overlay %s: %w", target, err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("mount overlay %s: create: %w", target, err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mount overlay %s: fsmount: %w", target, err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount overlay %s: move_mount: %w", target, err)
	}
	return nil
}

func fsconfigOption(fsfd int, opt string) error {
	key, value, hasValue := strings.Cut(opt, "=")
	if !hasValue {
		if err := unix.FsconfigSetFlag(fsfd, key); err != nil {
			return fmt.Errorf("option %s: %w", key, err)
		}
		return nil
	}
	if key != "lowerdir" {
		if err := unix.FsconfigSetString(fsfd, key, value); err != nil {
			return fmt.Errorf("option %s: %w", key, err)
		}
		return nil
	}
	for _, dir := range strings.Split(value, ":") {
		if err := unix.FsconfigSetString(fsfd, "lowerdir+", dir); err != nil {
			return fmt.Errorf("option lowerdir+ %s: %w", dir, err)
		}
	}
	return nil
}

// Unmount unmounts target. A busy mount is retried for about a second, then
// detached lazily (MNT_DETACH). A target that is not a mount point is not
// an error, so cleanup paths can call Unmount unconditionally.
func Unmount(target string) error {
	for range 20 {
		err := unix.Unmount(target, 0)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		case !errors.Is(err, unix.EBUSY):
			return fmt.Errorf("unmount %s: %w", target, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}
