package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// The RUN's /sys/fs/cgroup, as runc mounts BuildKit's read-only "cgroup"
// mount: on a cgroup v1 (or hybrid) host, a tmpfs with each v1
// hierarchy's cgroup of the RUN bound read-only on a directory named as
// the host's mount point (cpu, memory, systemd, cpu,cpuacct with its
// cpu and cpuacct symlinks); the hybrid v2 hierarchy is left out, as
// runc does. On a v2-only host, a cgroup2 file system in a new cgroup
// namespace, whose root is the RUN's cgroup. The RUN's cgroup is the
// init's: its step cgroup with limits, else the builder's own.

// cgroupfsBind is one v1 hierarchy bound into the RUN's /sys/fs/cgroup.
type cgroupfsBind struct {
	name   string   // the directory in /sys/fs/cgroup
	source string   // the RUN's cgroup in the host's mount of the hierarchy
	links  []string // co-mounted controllers: symlinks to name
}

// cgroupfsLayout decides the RUN's /sys/fs/cgroup from a mountinfo and a
// /proc/PID/cgroup: v2 when the only cgroup file system is cgroup2,
// else the binds of the v1 hierarchies (the first mount of each, none
// for a hierarchy the process is not in).
func cgroupfsLayout(mountinfo, self string) (v2 bool, binds []cgroupfsBind) {
	paths := parseProcCgroup(self)
	seen := map[string]bool{}
	haveV2 := false
	for _, m := range parseCgroupMounts(mountinfo) {
		if m.v2 {
			haveV2 = true
			continue
		}
		key, ctrls := hierarchyKey(m.super)
		p, in := paths[key]
		if key == "" || seen[key] || !in {
			continue
		}
		seen[key] = true
		b := cgroupfsBind{name: filepath.Base(m.point), source: cgroupDir(m, p)}
		if strings.Contains(b.name, ",") {
			for _, c := range ctrls {
				if c != b.name {
					b.links = append(b.links, c)
				}
			}
		}
		binds = append(binds, b)
	}
	return haveV2 && len(seen) == 0, binds
}

// hierarchyKey is the entry of a v1 hierarchy in /proc/PID/cgroup (as
// parseProcCgroup keys it), from its super options: its first
// controller, or name=NAME for a named hierarchy; and its controllers.
func hierarchyKey(superOpts string) (key string, ctrls []string) {
	var name string
	for _, o := range strings.Split(superOpts, ",") {
		switch {
		case strings.HasPrefix(o, "name="):
			name = o
		case o == "rw" || o == "ro" || strings.Contains(o, "=") || strings.HasPrefix(o, "no") || o == "xattr" || o == "clone_children" || o == "cpuset_v2_mode" || o == "favordynmods":
		default:
			ctrls = append(ctrls, o)
		}
	}
	if len(ctrls) > 0 {
		return ctrls[0], ctrls
	}
	return name, nil
}

// mountCgroupfs mounts the RUN's cgroups on p (a directory of the new
// root's /sys), read-only unless insecure (BuildKit's insecure mode
// makes the cgroup file system writable).
func (sb *sandbox) mountCgroupfs(p string, insecure bool) error {
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return fmt.Errorf("read cgroup: %w", err)
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if !insecure {
		flags |= unix.MS_RDONLY
	}
	v2, binds := cgroupfsLayout(string(mountinfo), string(self))
	if v2 {
		if err := mountCgroup2(p, flags); err != nil {
			return err
		}
		sb.cgroupNS = true
		return nil
	}
	if err := unix.Mount("tmpfs", p, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", p, err)
	}
	for _, b := range binds {
		if err := bindCgroup(p, b, flags); err != nil {
			return err
		}
	}
	return nil
}

// mountCgroup2 mounts cgroup2 on p from a new cgroup namespace, rooted at
// the init's cgroup. A namespace is a thread's: the mount is made on a
// thread of its own, which exits with its goroutine (never unlocked),
// and the command gets a namespace with the same root (startCommand).
func mountCgroup2(p string, flags uintptr) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			errc <- fmt.Errorf("new cgroup namespace: %w", err)
			return
		}
		if err := unix.Mount("cgroup2", p, "cgroup2", flags, ""); err != nil {
			errc <- fmt.Errorf("mount cgroup2 on %s: %w", p, err)
			return
		}
		errc <- nil
	}()
	return <-errc
}

// bindCgroup binds b's cgroup on p/NAME with flags, and makes its links.
func bindCgroup(p string, b cgroupfsBind, flags uintptr) error {
	dst := filepath.Join(p, b.name)
	if err := os.Mkdir(dst, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	if err := unix.Mount(b.source, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind cgroup %s on %s: %w", b.source, dst, err)
	}
	if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|flags, ""); err != nil {
		return fmt.Errorf("remount cgroup %s: %w", dst, err)
	}
	for _, l := range b.links {
		if err := os.Symlink(b.name, filepath.Join(p, l)); err != nil {
			return fmt.Errorf("link cgroup %s: %w", l, err)
		}
	}
	return nil
}
