package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/builder-dev/builder/internal/userns"
	"github.com/builder-dev/builder/snapshot"
	"golang.org/x/sys/unix"
)

// mountRoot mounts ms, in order, on target (snapshot.Mount.Mount handles
// bind and overlay, including lowerdir lists longer than a page).
func mountRoot(ms []snapshot.Mount, target string) error {
	for _, m := range ms {
		if err := m.Mount(target); err != nil {
			return fmt.Errorf("mount root: %w", err)
		}
	}
	return nil
}

type devNode struct {
	name         string
	major, minor uint32
	block        bool
}

// mknod creates n in dev, mode 0666 whatever the umask.
func mknod(dev string, n devNode) error {
	p := filepath.Join(dev, n.name)
	typ := uint32(unix.S_IFCHR)
	if n.block {
		typ = unix.S_IFBLK
	}
	if err := unix.Mknod(p, typ|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
		return fmt.Errorf("create device %s: %w", p, err)
	}
	if err := unix.Chmod(p, 0o666); err != nil {
		return fmt.Errorf("chmod device %s: %w", p, err)
	}
	return nil
}

var devNodes = []devNode{
	{name: "null", major: 1, minor: 3}, {name: "zero", major: 1, minor: 5},
	{name: "full", major: 1, minor: 7}, {name: "random", major: 1, minor: 8},
	{name: "urandom", major: 1, minor: 9}, {name: "tty", major: 5},
}

var devLinks = [][2]string{
	{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
	{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
	{"pts/ptmx", "ptmx"},
}

// bindDevice binds the host's /dev/NAME of n on an empty file in dev, as
// runc does in a user namespace, where mknod is refused. There the
// namespace's root cannot change the host node's owner or mode (it is
// the host root's, unmapped); elsewhere ro makes the bind read-only, so
// that no RUN can chmod, chown or touch the host's node (writes to the
// device still work: a device is written through any mount).
func bindDevice(dev string, n devNode, ro bool) error {
	p := filepath.Join(dev, n.name)
	if err := createFile(p); err != nil {
		return fmt.Errorf("create device mount point %s: %w", p, err)
	}
	if err := unix.Mount(filepath.Join("/dev", n.name), p, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind device /dev/%s: %w", n.name, err)
	}
	if ro {
		if err := remountWith(p, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC); err != nil {
			return fmt.Errorf("make device %s read-only: %w", p, err)
		}
	}
	return nil
}

// privateDevice makes n a node of the RUN's own in dev, usable once dev
// is remounted nodev: made with mknod, as runc makes it, and bound on
// itself, a mount of its own that keeps the device usable. A RUN that
// changes it (chmod 000 /dev/null, touch /dev/null) changes its own node,
// never the host's. Where mknod is refused (a container whose device
// rules forbid it), the host's node is bound read-only.
func privateDevice(dev string, n devNode) error {
	if err := mknod(dev, n); err != nil {
		if errors.Is(err, unix.EPERM) {
			return bindDevice(dev, n, true)
		}
		return err
	}
	p := filepath.Join(dev, n.name)
	if err := unix.Mount(p, p, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind device %s: %w", p, err)
	}
	return nil
}

// mountDev mounts a minimal /dev on dev: a tmpfs with the usual character
// devices, the fd symlinks and the mount points of /dev/pts, /dev/shm and
// /dev/mqueue.
//
// The tmpfs is nodev: a RUN keeps CAP_MKNOD (Docker's default set) but no
// node it makes, there or anywhere (the root and every RUN mount are
// nodev too), can be opened, so it cannot reach a host disk through a
// block device. The usual devices are the RUN's own nodes, each a mount
// of its own without nodev, made before the tmpfs became nodev
// (privateDevice); in a user namespace, where mknod is refused, the
// host's nodes are bound, as runc does there. Insecure mode (every
// capability anyway) makes them with mknod on a tmpfs without nodev, as
// runc does, unless in a user namespace.
func mountDev(dev string, insecure bool) error {
	flags := uintptr(unix.MS_NOSUID | unix.MS_STRICTATIME)
	makeNode := privateDevice
	switch {
	case inUserNS():
		makeNode = func(dev string, n devNode) error { return bindDevice(dev, n, false) }
	case insecure:
		makeNode = mknod
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", flags, "mode=755,size=65536k"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dev, err)
	}
	for _, n := range devNodes {
		if err := makeNode(dev, n); err != nil {
			return err
		}
	}
	for _, l := range devLinks {
		if err := os.Symlink(l[0], filepath.Join(dev, l[1])); err != nil {
			return fmt.Errorf("create /dev symlink: %w", err)
		}
	}
	for _, d := range []string{"pts", "shm", "mqueue"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Join(dev, d), err)
		}
	}
	if insecure {
		return nil
	}
	// Not setNodev: the devices' own mounts below it must keep working.
	if err := remountWith(dev, unix.MS_NODEV); err != nil {
		return fmt.Errorf("make %s nodev: %w", dev, err)
	}
	return nil
}

// mountDevpts mounts a private devpts instance on pts, its terminals of
// group tty (5) where that group exists (not under a single-id mapping).
func mountDevpts(pts string) error {
	opts := "newinstance,ptmxmode=0666,mode=0620,gid=5"
	if _, gids, err := userns.Current(); err == nil && !userns.Contains(gids, 5) {
		opts = "newinstance,ptmxmode=0666,mode=0620"
	}
	if err := unix.Mount("devpts", pts, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, opts); err != nil {
		return fmt.Errorf("mount devpts on %s: %w", pts, err)
	}
	return nil
}

// mountMqueue mounts the POSIX message queues of the sandbox's IPC
// namespace on p, as runc does.
func mountMqueue(p string) error {
	if err := unix.Mount("mqueue", p, "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount mqueue on %s: %w", p, err)
	}
	return nil
}

// shmMount is the mount of /dev/shm: runc's default (shm, 64 MiB,
// nosuid, nodev, noexec) when size is 0; with --shm-size, BuildKit's: the
// frontend then mounts a RUN tmpfs of that size there, which has a RUN
// tmpfs's options (tmpfsFlags: exec allowed).
func shmMount(size int64, insecure bool) (source string, flags uintptr, data string) {
	if size == 0 {
		return "shm", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=1777,size=" + strconv.FormatInt(64<<20, 10)
	}
	return "tmpfs", tmpfsFlags(Tmpfs{}, insecure), "size=" + strconv.FormatInt(size, 10)
}

// mountShm mounts /dev/shm on shm (shmMount).
func mountShm(shm string, size int64, insecure bool) error {
	source, flags, data := shmMount(size, insecure)
	if err := unix.Mount(source, shm, "tmpfs", flags, data); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", shm, err)
	}
	return nil
}

// mountSys mounts a sysfs on sys, read-only unless rw, or binds the
// host's where a new sysfs is refused.
func mountSys(sys string, rw bool) error {
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if !rw {
		flags |= unix.MS_RDONLY
	}
	err := unix.Mount("sysfs", sys, "sysfs", flags, "")
	if err == nil {
		return nil
	}
	if err := unix.Mount("/sys", sys, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind /sys on %s: %w", sys, err)
	}
	if err := unix.Mount("", sys, "", unix.MS_BIND|unix.MS_REMOUNT|flags, ""); err != nil {
		return fmt.Errorf("remount %s: %w", sys, err)
	}
	return nil
}

// insecureDevs are the devices BuildKit adds to /dev for
// --security=insecure, besides the loop devices.
var insecureDevs = []devNode{
	{name: "kmsg", major: 1, minor: 11}, {name: "cuse", major: 10, minor: 203},
	{name: "fuse", major: 10, minor: 229}, {name: "kvm", major: 10, minor: 232},
	{name: "net/tun", major: 10, minor: 200}, {name: "loop-control", major: 10, minor: 237},
}

// insecureDevices creates BuildKit's insecure-mode devices in dev, mode
// 0666 as runc makes them: insecureDevs, then the block devices loop0 up
// to the host's first free loop device plus 7. In a user namespace,
// where mknod is refused, there are none (as BuildKit).
func insecureDevices(dev string) error {
	if inUserNS() {
		return nil
	}
	nodes := slices.Clone(insecureDevs)
	for i := 0; i <= freeLoopDevice()+7; i++ {
		nodes = append(nodes, devNode{name: "loop" + strconv.Itoa(i), major: 7, minor: uint32(i), block: true})
	}
	if err := os.Mkdir(filepath.Join(dev, "net"), 0o755); err != nil {
		return fmt.Errorf("create %s/net: %w", dev, err)
	}
	for _, n := range nodes {
		if err := mknod(dev, n); err != nil {
			return err
		}
	}
	return nil
}

// freeLoopDevice asks the host's /dev/loop-control for the first free
// loop device (which the kernel creates if need be); 0 when it cannot.
func freeLoopDevice() int {
	fd, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	n, err := unix.IoctlRetInt(fd, unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return 0
	}
	return n
}

// inUserNS reports whether the process runs in a user namespace.
func inUserNS() bool { return userns.InUserNS() }

// maskedPaths and readonlyPaths are runc's defaults as Docker sets them.
var (
	maskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore",
		"/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
		"/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// maskPaths runs inside the new root: it hides maskedPaths (an empty
// read-only tmpfs on directories, as runc's, without options; /dev/null
// on files) and makes
// readonlyPaths read-only. Paths the kernel does not have are skipped.
func maskPaths() error {
	for _, p := range maskedPaths {
		if err := mask(p); err != nil {
			return err
		}
	}
	for _, p := range readonlyPaths {
		if err := readonly(p); err != nil {
			return err
		}
	}
	return nil
}

func mask(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	if fi.IsDir() {
		err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "")
	} else {
		err = unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
	}
	if err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	return nil
}

func readonly(p string) error {
	err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, "")
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err == nil {
		flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
		err = unix.Mount("", p, "", flags, "")
	}
	if err != nil {
		return fmt.Errorf("make %s read-only: %w", p, err)
	}
	return nil
}

// pivot makes root (a mount point) the root of the mount namespace and
// detaches the old root, the way runc does with pivot_root(".", ".").
func pivot(root string) error {
	oldRoot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open old root: %w", err)
	}
	defer unix.Close(oldRoot)
	newRoot, err := unix.Open(root, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open new root %s: %w", root, err)
	}
	defer unix.Close(newRoot)
	if err := unix.Fchdir(newRoot); err != nil {
		return fmt.Errorf("enter new root %s: %w", root, err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root to %s: %w", root, err)
	}
	// The old root is now stacked on "/": detach it without propagating.
	if err := unix.Fchdir(oldRoot); err != nil {
		return fmt.Errorf("enter old root: %w", err)
	}
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make old root slave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("enter /: %w", err)
	}
	return nil
}

// loopbackUp brings lo up in the new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open socket for lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// setNodev makes the mount at p, and every mount below it, nodev
// (mount_setattr, Linux 5.12; else a bind remount of p alone that keeps
// its other flags).
func setNodev(p string) error {
	err := unix.MountSetattr(-1, p, unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NODEV})
	if errors.Is(err, unix.ENOSYS) {
		err = remountWith(p, unix.MS_NODEV)
	}
	if err != nil {
		return fmt.Errorf("make %s nodev: %w", p, err)
	}
	return nil
}

// remountWith bind-remounts p with its current flags plus add (a bind
// remount replaces them all, and a user namespace refuses to clear the
// locked ones).
func remountWith(p string, add uintptr) error {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return err
	}
	flags := uintptr(unix.MS_BIND|unix.MS_REMOUNT) | add
	for _, f := range [][2]uintptr{
		{unix.ST_RDONLY, unix.MS_RDONLY}, {unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV},
		{unix.ST_NOEXEC, unix.MS_NOEXEC}, {unix.ST_NOATIME, unix.MS_NOATIME},
		{unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if uintptr(st.Flags)&f[0] != 0 {
			flags |= f[1]
		}
	}
	return unix.Mount("", p, "", flags, "")
}
