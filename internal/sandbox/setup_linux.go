package sandbox

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// sandbox is the init's view of the root it prepared: the mount points it
// mounted on and the stubs it created, both relative to root, so that
// teardown works before and after the pivot.
type sandbox struct {
	root     string // host path of the mounted root, then "/" after pivot
	targets  []string
	stubs    []stub
	insecure bool // --security=insecure: no nodev anywhere
	cgroupNS bool // /sys/fs/cgroup is a cgroup2 mount of a new cgroup namespace
}

// etcFiles are the generated files bind-mounted into the root, read-only
// as BuildKit binds them (nosuid, nodev, noexec). BuildKit gives no
// /etc/hostname: the hostname is the UTS name only.
var etcFiles = []string{"hosts", "resolv.conf"}

func (sb *sandbox) setup(cfg *config) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	files := filepath.Join(cfg.Dir, "files")
	if err := prepareScratch(cfg, files); err != nil {
		return err
	}
	if err := mountRoot(cfg.Mounts, sb.root); err != nil {
		return err
	}
	if !cfg.Insecure {
		// No device node in the root can be opened (see mountDev).
		if err := setNodev(sb.root); err != nil {
			return err
		}
	}
	ex := newExtras(cfg, files)
	if err := sb.mountSystem(ex, cfg.Insecure); err != nil {
		return err
	}
	for _, name := range etcFiles {
		src := filepath.Join(files, name)
		err := sb.system(ex, "etc/"+name, false, func(p string) error {
			if err := unix.Mount(src, p, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind %s on %s: %w", src, p, err)
			}
			return remountReadonly(p, "etc/"+name)
		})
		if err != nil {
			return err
		}
	}
	if err := sb.mountExtras(ex); err != nil {
		return err
	}
	if err := pivot(sb.root); err != nil {
		return err
	}
	sb.root = "/"
	cfg.cgroupNS = sb.cgroupNS
	return finishInside(cfg)
}

// prepareScratch mounts a tmpfs on cfg.Dir (so nothing is written to the
// host), with the root mount point and the generated /etc files.
func prepareScratch(cfg *config, files string) error {
	if err := unix.Mount("tmpfs", cfg.Dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, fmt.Sprintf("mode=0700,size=%d", scratchSize(cfg.Files))); err != nil {
		return fmt.Errorf("mount scratch tmpfs on %s: %w", cfg.Dir, err)
	}
	for _, d := range []string{"root", "files"} {
		if err := os.Mkdir(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return fmt.Errorf("create scratch directory: %w", err)
		}
	}
	contents := map[string][]byte{
		"hosts":       cfg.Hosts,
		"resolv.conf": cfg.ResolvConf,
	}
	for name, b := range contents {
		p := filepath.Join(files, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

// mountSystem mounts /proc, /dev (with /dev/pts, /dev/shm, /dev/mqueue),
// /sys and /sys/fs/cgroup as runc does, or the extra mounts that take
// their place; insecure adds devices to /dev and leaves /sys and the
// cgroups writable.
func (sb *sandbox) mountSystem(ex *extras, insecure bool) error {
	err := sb.system(ex, "proc", true, func(p string) error {
		if err := unix.Mount("proc", p, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount proc on %s: %w", p, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	p, err := sb.mountPoint("dev", true)
	if err != nil {
		return err
	}
	if err := mountDev(p, insecure); err != nil {
		return err
	}
	if insecure {
		if err := insecureDevices(p); err != nil {
			return err
		}
	}
	if err := sb.system(ex, "dev/pts", true, mountDevpts); err != nil {
		return err
	}
	if err := sb.system(ex, "dev/shm", true, func(p string) error { return mountShm(p, ex.cfg.ShmSize, insecure) }); err != nil {
		return err
	}
	if err := sb.system(ex, "dev/mqueue", true, mountMqueue); err != nil {
		return err
	}
	if err := sb.system(ex, "sys", true, func(p string) error { return mountSys(p, insecure) }); err != nil {
		return err
	}
	return sb.system(ex, "sys/fs/cgroup", true, func(p string) error { return sb.mountCgroupfs(p, insecure) })
}

// mountPoint makes rel (resolved inside the root) exist as a directory or
// file, remembering any stub it creates, and records it as a mount target.
func (sb *sandbox) mountPoint(rel string, dir bool) (string, error) {
	p, err := sb.ensure(rel, dir)
	if err != nil {
		return "", err
	}
	r, err := filepath.Rel(sb.root, p)
	if err != nil {
		return "", fmt.Errorf("mount point %s: %w", rel, err)
	}
	sb.targets = append(sb.targets, r)
	return p, nil
}

// finishInside runs after the pivot: masks (none when insecure),
// hostname, network, cwd.
func finishInside(cfg *config) error {
	if !cfg.Insecure {
		if err := maskPaths(); err != nil {
			return err
		}
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return fmt.Errorf("set hostname %q: %w", cfg.Hostname, err)
	}
	if cfg.Network != NetworkHost {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(cfg.Cwd, 0o755); err != nil {
		return fmt.Errorf("create working directory: %w", err)
	}
	return nil
}

// teardown unmounts everything mounted on the root's mount points and
// removes the stubs created for them, restoring their parents' times.
func (sb *sandbox) teardown() error {
	for i := len(sb.targets) - 1; i >= 0; i-- {
		p := filepath.Join(sb.root, sb.targets[i])
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	return sb.removeStubs()
}
