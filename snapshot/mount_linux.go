package snapshot

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Mount mounts m on target. Overlay mounts whose option string does not fit
// in one page (mount(2)'s limit, reached at about 36 layers of the default
// store) go through the fsopen/fsconfig API, one "lowerdir+" call per
// layer (Linux 6.8+); an older kernel gets the lower directories by
// descriptor (mountOverlayByFD).
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
		err := overlayFsconfig(m.Options, target)
		if errors.Is(err, errNoLowerdirAppend) {
			return mountOverlayByFD(m.Options, target)
		}
		return err
	default:
		return fmt.Errorf("mount %s: unsupported mount type %q", target, m.Type)
	}
}

// errNoLowerdirAppend: the kernel has no fsconfig API, or no "lowerdir+"
// option in it (before Linux 6.8).
var errNoLowerdirAppend = errors.New(`no fsconfig "lowerdir+" (Linux 6.8)`)

// overlayFsconfig is mountOverlayFsconfig; tests replace it to take the
// path of a kernel before 6.8.
var overlayFsconfig = mountOverlayFsconfig

// mountOverlayByFD mounts an overlay with mount(2), naming each lower
// directory by a descriptor open on it, /proc/self/fd/N: about 18 bytes
// a layer instead of the store's path (about 105), so that some 200 layers
// fit in mount(2)'s page. overlayfs resolves the paths when it mounts and
// keeps the directories; the descriptors are closed after.
func mountOverlayByFD(options []string, target string) error {
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	short := make([]string, 0, len(options))
	layers := 0
	for _, opt := range options {
		value, ok := strings.CutPrefix(opt, "lowerdir=")
		if !ok {
			short = append(short, opt)
			continue
		}
		dirs := strings.Split(value, ":")
		layers += len(dirs)
		for i, dir := range dirs {
			fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("mount overlay %s: open lower directory %s: %w", target, dir, err)
			}
			fds = append(fds, fd)
			dirs[i] = "/proc/self/fd/" + strconv.Itoa(fd)
		}
		short = append(short, "lowerdir="+strings.Join(dirs, ":"))
	}
	data := strings.Join(short, ",")
	if len(data) >= os.Getpagesize() {
		return fmt.Errorf("mount overlay %s: %d layers do not fit in one mount(2) call on this kernel (%w): build with fewer layers, or on Linux 6.8 or later", target, layers, errNoLowerdirAppend)
	}
	if err := unix.Mount("overlay", target, "overlay", 0, data); err != nil {
		return fmt.Errorf("mount overlay %s: %w", target, err)
	}
	return nil
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
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) { // before 5.2; a seccomp filter
		return fmt.Errorf("mount overlay %s: %w: %w", target, errNoLowerdirAppend, err)
	}
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
	for i, dir := range strings.Split(value, ":") {
		err := unix.FsconfigSetString(fsfd, "lowerdir+", dir)
		if i == 0 && errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("option lowerdir+: %w: %w", errNoLowerdirAppend, err)
		}
		if err != nil {
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
