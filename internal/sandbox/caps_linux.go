package sandbox

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// capability is one capability and its name, as seccomp profiles name it.
type capability struct {
	id   int
	name string
}

// defaultCaps is Docker's default capability set for containers.
var defaultCaps = []capability{
	{unix.CAP_CHOWN, "CAP_CHOWN"}, {unix.CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"},
	{unix.CAP_FSETID, "CAP_FSETID"}, {unix.CAP_FOWNER, "CAP_FOWNER"},
	{unix.CAP_MKNOD, "CAP_MKNOD"}, {unix.CAP_NET_RAW, "CAP_NET_RAW"},
	{unix.CAP_SETGID, "CAP_SETGID"}, {unix.CAP_SETUID, "CAP_SETUID"},
	{unix.CAP_SETFCAP, "CAP_SETFCAP"}, {unix.CAP_SETPCAP, "CAP_SETPCAP"},
	{unix.CAP_NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE"}, {unix.CAP_SYS_CHROOT, "CAP_SYS_CHROOT"},
	{unix.CAP_KILL, "CAP_KILL"}, {unix.CAP_AUDIT_WRITE, "CAP_AUDIT_WRITE"},
}

// dropCapabilities limits the calling thread, which must be locked to its
// goroutine, to defaultCaps: bounding set (without those in drop),
// effective and permitted; the inheritable and ambient sets are cleared (as
// Docker does since CVE-2022-24769). Everything it execs as root gets at
// most these, minus drop (which the thread keeps until the exec: chroot).
func dropCapabilities(drop ...int) error {
	last, err := lastCap()
	if err != nil {
		return err
	}
	keep := map[int]bool{}
	for _, c := range defaultCaps {
		keep[c.id] = !slices.Contains(drop, c.id)
	}
	for c := 0; c <= last; c++ {
		if keep[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d from bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && err != unix.EINVAL {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	// The thread keeps what it has of defaultCaps: a builder given file
	// capabilities (the builder image's, for chroot isolation) has only
	// some; a command it execs as root gets the bounding set anyway.
	have, err := permittedCaps()
	if err != nil {
		return err
	}
	var caps []int
	for _, c := range defaultCaps {
		if have&(1<<uint(c.id)) != 0 {
			caps = append(caps, c.id)
		}
	}
	return capset(caps)
}

// permittedCaps is the calling thread's permitted set as a bit mask.
func permittedCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("get capabilities: %w", err)
	}
	return uint64(data[0].Permitted) | uint64(data[1].Permitted)<<32, nil
}

// allCapabilities lists the capabilities in the calling thread's
// effective set that the kernel knows, as BuildKit grants
// --security=insecure (containerd's cap.Current): made ambient, they are
// in all five sets of the command, whatever its uid.
func allCapabilities() ([]uintptr, error) {
	last, err := lastCap()
	if err != nil {
		return nil, err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("get capabilities: %w", err)
	}
	var caps []uintptr
	for c := 0; c <= last && c < 64; c++ {
		if data[c/32].Effective&(1<<(uint(c)%32)) != 0 {
			caps = append(caps, uintptr(c))
		}
	}
	return caps, nil
}

func capset(caps []int) error {
	var data [2]unix.CapUserData
	for _, c := range caps {
		data[c/32].Effective |= 1 << (uint(c) % 32)
		data[c/32].Permitted |= 1 << (uint(c) % 32)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("set capabilities: %w", err)
	}
	return nil
}

func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("read last capability: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("parse /proc/sys/kernel/cap_last_cap: %w", err)
	}
	return n, nil
}
