package sandbox

import (
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/builder-dev/builder/snapshot"
)

// InitArg is the hidden argv[1] with which the builder re-executes itself to
// become the sandbox init. See Init.
const InitArg = "__builder-sandbox-init"

// Network modes of a Spec.
const (
	NetworkNone = "none" // a new network namespace with only lo, up
	NetworkHost = "host" // the host's network namespace
	// NetworkPrivate is a new network namespace with outbound access
	// through slirp4netns (see PrivateNetworkAvailable): RUN reaches what
	// the builder reaches, but not the host's loopback; DNS goes through
	// slirp4netns's forwarder.
	NetworkPrivate = "private"
)

// DefaultHostname is the hostname of a sandbox whose Spec leaves it empty.
const DefaultHostname = "buildkitsandbox"

// DefaultPath is the PATH used to find Args[0] when Env has no PATH.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ErrInvalidSpec is returned by Run for a Spec it refuses before starting.
var ErrInvalidSpec = errors.New("sandbox: invalid spec")

// Spec describes one command to run isolated. The zero value is not usable:
// Mounts and Args are required.
type Spec struct {
	// Mounts make up the root filesystem, mounted in order on the same
	// target inside the sandbox's own mount namespace: "overlay" with
	// lowerdir/upperdir/workdir options, or "bind" with {"rbind","rw"}.
	Mounts []snapshot.Mount
	// Args is the argv. Args[0] is looked up in the root's PATH (from Env,
	// else DefaultPath) unless it contains a slash.
	Args []string
	// Env is the exact environment of the command; nothing comes from the host.
	Env []string
	// Cwd is the absolute working directory, created (0755, root) if missing.
	// Empty means "/".
	Cwd string
	// UID, GID and AdditionalGids are the credentials of the command.
	UID, GID       uint32
	AdditionalGids []uint32
	// Network is NetworkNone (the default when empty), NetworkHost or
	// NetworkPrivate.
	Network string
	// Insecure is RUN --security=insecure, as BuildKit grants it: the
	// command gets every capability the builder has (all five sets,
	// ambient included, so a non-root USER has them too), /sys is
	// writable, no path of /proc or /sys is masked or read-only, and /dev
	// also has kmsg, cuse, fuse, kvm, net/tun, loop-control and the loop
	// devices up to the first free one plus 7.
	Insecure bool
	// Hostname is the UTS hostname (there is no /etc/hostname, as in
	// BuildKit); DefaultHostname when empty.
	Hostname string
	// Hosts and ResolvConf are the contents of /etc/hosts and
	// /etc/resolv.conf. When nil, Hosts maps localhost and Hostname to the
	// loopback addresses and ResolvConf is a copy of the host's (with
	// NetworkPrivate, its nameservers replaced by slirp4netns's).
	// ExtraHosts are "NAME IP" lines added to Hosts (--add-host).
	Hosts, ResolvConf []byte
	ExtraHosts        []string
	// Stdout and Stderr receive the command's output; nil discards it.
	Stdout, Stderr io.Writer
	// TempDir is where Run makes the sandbox's empty private directory
	// (removed when Run returns); os.TempDir() when empty. Pointing it at
	// a build's own temporary directory keeps even a SIGKILLed build from
	// leaving anything outside it.
	TempDir string
	// Binds, Tmpfs and Files are extra mounts for the command (RUN
	// --mount), made after the root and the system mounts, parents before
	// children (sorted by target). Targets are absolute paths resolved
	// inside the root (symlinks cannot leave it); missing mount points are
	// created as stubs and removed again afterwards, like those of /proc.
	// One whose target is a system mount's (/proc, /sys, /dev/pts,
	// /dev/shm, /etc/hosts, /etc/resolv.conf, /etc/hostname) is mounted
	// instead of it, in its place, as runc replaces a default mount whose
	// destination a user mount repeats.
	Binds []Bind
	Tmpfs []Tmpfs
	Files []File
	// Isolation is IsolationNamespaces (the default when empty; also
	// what IsolationRootless means inside the builder's user namespace)
	// or IsolationChroot.
	Isolation string
	// Limits are the command's resource limits: ShmSize and Ulimits
	// apply as they are, the others through Cgroups, which must be set
	// when Limits.NeedsCgroup.
	Limits  Limits
	Cgroups *Cgroups
}

// Bind mounts a host directory or file into the sandbox. Source is bound
// as it is: the caller pins it (a private copy, or a directory only the
// builder writes), so nothing can swap it for a symlink in between.
type Bind struct {
	Source, Target string
	ReadOnly       bool
}

// Tmpfs mounts an empty tmpfs as BuildKit does: nosuid, mode 1777 (the
// kernel's default), Size bytes (0: the kernel's default, half the RAM).
type Tmpfs struct {
	Target   string
	Size     int64
	ReadOnly bool
}

// File is a read-only file of the given content, mode and owner mounted at
// Target (a secret). Its content lives only in the sandbox's memory: it
// reaches the init through its spec pipe and a private tmpfs.
type File struct {
	Target   string
	Data     []byte
	Mode     uint32
	UID, GID uint32
}

// ExitError reports a command that exited non-zero or was killed by a
// signal. For a signal, Code is 128 plus the signal number and Signal its
// name ("SIGKILL"). OOMKilled says the kernel killed it (or one of its
// processes) for exceeding MemoryLimit.
type ExitError struct {
	Code        int
	Signal      string
	OOMKilled   bool
	MemoryLimit int64
}

func (e *ExitError) Error() string {
	if e.OOMKilled {
		return fmt.Sprintf("killed: out of memory (limit %s)", MiB(e.MemoryLimit))
	}
	if e.Signal != "" {
		return fmt.Sprintf("killed by signal %s (exit code %d)", e.Signal, e.Code)
	}
	return fmt.Sprintf("exit code %d", e.Code)
}

// config is what the parent sends to the sandbox init as JSON.
type config struct {
	Mounts     []snapshot.Mount
	Args       []string
	Env        []string
	Cwd        string
	UID, GID   uint32
	Groups     []uint32
	Network    string
	Insecure   bool
	Hostname   string
	Hosts      []byte
	ResolvConf []byte
	Binds      []Bind
	Tmpfs      []Tmpfs
	Files      []File
	Isolation  string
	ShmSize    int64
	Ulimits    []Ulimit
	// noSetgroups is set by the init where setgroups(2) is denied.
	noSetgroups bool
	// cgroupNS is set by the init when it mounted cgroup2 in a new cgroup
	// namespace: the command gets one too (namespaces are per thread).
	cgroupNS bool
	// Dir is an empty private directory on the host; the init mounts a
	// tmpfs on it (in its namespace) to hold the root mount point and the
	// generated /etc files.
	Dir string
}

// result is what the sandbox init reports back to the parent as JSON.
type result struct {
	Error  string `json:",omitempty"` // setup failed before or after the command
	Code   int
	Signal string `json:",omitempty"`
	// Set by the parent from the step's cgroup.
	oom         bool
	memoryLimit int64
}

func validate(spec Spec) error {
	if len(spec.Mounts) == 0 {
		return fmt.Errorf("%w: no root filesystem mounts", ErrInvalidSpec)
	}
	if len(spec.Args) == 0 || spec.Args[0] == "" {
		return fmt.Errorf("%w: empty command", ErrInvalidSpec)
	}
	if spec.Cwd != "" && !path.IsAbs(spec.Cwd) {
		return fmt.Errorf("%w: working directory %q is not absolute", ErrInvalidSpec, spec.Cwd)
	}
	switch spec.Network {
	case "", NetworkNone, NetworkHost, NetworkPrivate:
	default:
		return fmt.Errorf("%w: unknown network mode %q (want %q, %q or %q)", ErrInvalidSpec, spec.Network, NetworkNone, NetworkHost, NetworkPrivate)
	}
	for _, h := range spec.ExtraHosts {
		if f := strings.Fields(h); len(f) != 2 || strings.ContainsAny(h, "\n#") {
			return fmt.Errorf("%w: extra host %q is not NAME IP", ErrInvalidSpec, h)
		}
	}
	if !validHostname(spec.Hostname) {
		return fmt.Errorf("%w: invalid hostname %q", ErrInvalidSpec, spec.Hostname)
	}
	for _, m := range extraMounts(spec.Binds, spec.Tmpfs, spec.Files) {
		if !path.IsAbs(m.target) || path.Clean(m.target) == "/" {
			return fmt.Errorf("%w: mount target %q is not an absolute path below /", ErrInvalidSpec, m.target)
		}
	}
	for _, f := range spec.Files {
		if len(f.Data) > MaxFileSize {
			return fmt.Errorf("%w: file for %s is larger than %d bytes", ErrInvalidSpec, f.Target, MaxFileSize)
		}
	}
	if err := spec.Limits.Check(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSpec, err)
	}
	if spec.Limits.NeedsCgroup() && spec.Cgroups == nil {
		return fmt.Errorf("%w: limits need Cgroups", ErrInvalidSpec)
	}
	switch spec.Isolation {
	case "", IsolationNamespaces, IsolationRootless:
	case IsolationChroot:
		return validateChroot(spec)
	default:
		return fmt.Errorf("%w: unknown isolation %q", ErrInvalidSpec, spec.Isolation)
	}
	return nil
}

// MaxFileSize bounds the content of a File (BuildKit's secret limit).
const MaxFileSize = 500 * 1024

// extraMount is one entry of Binds, Tmpfs or Files: kind is 'b', 't' or
// 'f' and i its index there.
type extraMount struct {
	target string
	kind   byte
	i      int
}

// extraMounts lists the extra mounts in mount order: by cleaned target, so
// that a parent is mounted before anything below it.
func extraMounts(binds []Bind, tmpfs []Tmpfs, files []File) []extraMount {
	var out []extraMount
	for i, b := range binds {
		out = append(out, extraMount{b.Target, 'b', i})
	}
	for i, t := range tmpfs {
		out = append(out, extraMount{t.Target, 't', i})
	}
	for i, f := range files {
		out = append(out, extraMount{f.Target, 'f', i})
	}
	slices.SortStableFunc(out, func(a, b extraMount) int {
		return strings.Compare(path.Clean(a.target), path.Clean(b.target))
	})
	return out
}

func validHostname(h string) bool {
	if len(h) > 64 {
		return false
	}
	for _, r := range h {
		ok := r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !ok {
			return false
		}
	}
	return true
}

func defaultHosts(hostname string) []byte {
	return fmt.Appendf(nil, "127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost ip6-loopback\n", hostname)
}
