//go:build linux

package seccomp

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// dockerCaps is Docker's default capability set, as the sandbox gives it.
var dockerCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}

// run interprets prog, as the kernel does, on one call.
func run(t *testing.T, prog []unix.SockFilter, arch uint32, nr uint32, args ...uint64) uint32 {
	t.Helper()
	data := make([]byte, 64)
	binary.LittleEndian.PutUint32(data[offNr:], nr)
	binary.LittleEndian.PutUint32(data[offArch:], arch)
	for i, v := range args {
		binary.LittleEndian.PutUint64(data[offArgs+8*i:], v)
	}
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			acc = binary.LittleEndian.Uint32(data[in.K:])
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			acc &= in.K
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		case unix.BPF_JMP | unix.BPF_JA:
			pc += int(in.K)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K, unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			var ok bool
			switch in.Code & 0xf0 {
			case unix.BPF_JEQ:
				ok = acc == in.K
			case unix.BPF_JGT:
				ok = acc > in.K
			case unix.BPF_JGE:
				ok = acc >= in.K
			}
			if ok {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		default:
			t.Fatalf("instruction %d: unknown code %#x", pc, in.Code)
		}
	}
	t.Fatal("the program ends without returning")
	return 0
}

func nr(t *testing.T, arch specs.Arch, name string) uint32 {
	t.Helper()
	n, ok := syscallNumbers[string(arch)][name]
	if !ok {
		t.Fatalf("no %s on %s", name, arch)
	}
	return n
}

const (
	allow  = retAllow
	eperm  = retErrno | uint32(unix.EPERM)
	enosys = retErrno | uint32(unix.ENOSYS)
)

// TestDefaultProgram checks the compiled default profile call by call:
// the allowed list, the default EPERM, argument rules (clone's namespace
// flags, personality, socket domains), clone3's ENOSYS, newer calls'
// ENOSYS, the i386 and x32 ABIs of x86_64, and unknown architectures.
func TestDefaultProgram(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skipf("the cases name x86_64's calls; GOARCH is %s", runtime.GOARCH)
	}
	prog, err := DefaultProgram(dockerCaps)
	if err != nil {
		t.Fatal(err)
	}
	x64, i386 := uint32(unix.AUDIT_ARCH_X86_64), uint32(unix.AUDIT_ARCH_I386)
	cases := []struct {
		name string
		arch uint32
		nr   uint32
		args []uint64
		want uint32
	}{
		{"read", x64, nr(t, specs.ArchX86_64, "read"), nil, allow},
		{"execve", x64, nr(t, specs.ArchX86_64, "execve"), nil, allow},
		{"chroot (CAP_SYS_CHROOT)", x64, nr(t, specs.ArchX86_64, "chroot"), nil, allow},
		{"keyctl", x64, nr(t, specs.ArchX86_64, "keyctl"), nil, eperm},
		{"mount (no CAP_SYS_ADMIN)", x64, nr(t, specs.ArchX86_64, "mount"), nil, eperm},
		{"unshare", x64, nr(t, specs.ArchX86_64, "unshare"), nil, eperm},
		{"bpf", x64, nr(t, specs.ArchX86_64, "bpf"), nil, eperm},
		{"clone, a thread", x64, nr(t, specs.ArchX86_64, "clone"), []uint64{unix.CLONE_VM | unix.CLONE_THREAD | unix.CLONE_SIGHAND}, allow},
		{"clone, a new user namespace", x64, nr(t, specs.ArchX86_64, "clone"), []uint64{unix.CLONE_NEWUSER}, eperm},
		{"clone, a new mount namespace and upper bits", x64, nr(t, specs.ArchX86_64, "clone"), []uint64{1<<40 | unix.CLONE_NEWNS}, eperm},
		{"clone, upper bits only", x64, nr(t, specs.ArchX86_64, "clone"), []uint64{1 << 40}, allow},
		{"clone3", x64, nr(t, specs.ArchX86_64, "clone3"), nil, enosys},
		{"personality query", x64, nr(t, specs.ArchX86_64, "personality"), []uint64{0xffffffff}, allow},
		{"personality PER_LINUX32", x64, nr(t, specs.ArchX86_64, "personality"), []uint64{8}, allow},
		{"personality other", x64, nr(t, specs.ArchX86_64, "personality"), []uint64{0x0400000}, eperm},
		{"personality 0 with upper bits", x64, nr(t, specs.ArchX86_64, "personality"), []uint64{1 << 32}, eperm},
		{"socket AF_INET", x64, nr(t, specs.ArchX86_64, "socket"), []uint64{unix.AF_INET}, allow},
		{"socket AF_NETLINK", x64, nr(t, specs.ArchX86_64, "socket"), []uint64{unix.AF_NETLINK}, allow},
		{"socket AF_VSOCK", x64, nr(t, specs.ArchX86_64, "socket"), []uint64{unix.AF_VSOCK}, eperm},
		{"socket AF_XDP", x64, nr(t, specs.ArchX86_64, "socket"), []uint64{unix.AF_XDP}, allow},
		{"a call newer than the profile's", x64, 1000, nil, enosys},
		{"x32 read", x64, x32Bit | 0, nil, enosys},
		{"i386 read", i386, nr(t, specs.ArchX86, "read"), nil, allow},
		{"i386 keyctl", i386, nr(t, specs.ArchX86, "keyctl"), nil, eperm},
		{"i386 socketcall", i386, nr(t, specs.ArchX86, "socketcall"), nil, allow},
		{"i386 personality query", i386, nr(t, specs.ArchX86, "personality"), []uint64{0xffffffff}, allow},
		{"i386 personality other", i386, nr(t, specs.ArchX86, "personality"), []uint64{0x0400000}, eperm},
		{"i386 clone, a new user namespace", i386, nr(t, specs.ArchX86, "clone"), []uint64{unix.CLONE_NEWUSER}, eperm},
		{"an architecture not in the profile", unix.AUDIT_ARCH_AARCH64, 63, nil, enosys},
	}
	for _, c := range cases {
		if got := run(t, prog, c.arch, c.nr, c.args...); got != c.want {
			t.Errorf("%s: filter returns %#x, want %#x", c.name, got, c.want)
		}
	}
}

// TestTablesMatchHost: the generated table of the host's architecture
// has the numbers golang.org/x/sys compiles in (go generate made it from
// another x/sys otherwise).
func TestTablesMatchHost(t *testing.T) {
	arch := map[string]string{"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64"}[runtime.GOARCH]
	if arch == "" {
		t.Skipf("no table for %s", runtime.GOARCH)
	}
	for name, want := range map[string]uint32{"read": unix.SYS_READ, "execve": unix.SYS_EXECVE,
		"clone3": unix.SYS_CLONE3, "keyctl": unix.SYS_KEYCTL, "openat2": unix.SYS_OPENAT2,
		"seccomp": unix.SYS_SECCOMP, "personality": unix.SYS_PERSONALITY} {
		if got := syscallNumbers[arch][name]; got != want {
			t.Errorf("%s %s: table has %d, x/sys %d", arch, name, got, want)
		}
	}
}

// TestCompareOperators checks every comparison on 64-bit values around
// the compared one, against Go's own comparison, on both halves.
func TestCompareOperators(t *testing.T) {
	values := []uint64{0, 1, 0xffffffff, 1 << 32, 1<<32 | 5, 5, 0xffffffff00000000, ^uint64(0)}
	ops := map[specs.LinuxSeccompOperator]func(a, v, v2 uint64) bool{
		specs.OpEqualTo:      func(a, v, _ uint64) bool { return a == v },
		specs.OpNotEqual:     func(a, v, _ uint64) bool { return a != v },
		specs.OpGreaterThan:  func(a, v, _ uint64) bool { return a > v },
		specs.OpGreaterEqual: func(a, v, _ uint64) bool { return a >= v },
		specs.OpLessThan:     func(a, v, _ uint64) bool { return a < v },
		specs.OpLessEqual:    func(a, v, _ uint64) bool { return a <= v },
		specs.OpMaskedEqual:  func(a, v, v2 uint64) bool { return a&v == v2 },
	}
	for op, want := range ops {
		for _, v := range values {
			v2 := v & 0x00000000ffff0005
			p := &specs.LinuxSeccomp{
				DefaultAction: specs.ActErrno,
				Architectures: []specs.Arch{specs.ArchX86_64},
				Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow,
					Args: []specs.LinuxSeccompArg{{Index: 2, Value: v, ValueTwo: v2, Op: op}}}},
			}
			prog, err := Compile(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range values {
				got := run(t, prog, unix.AUDIT_ARCH_X86_64, syscallNumbers["SCMP_ARCH_X86_64"]["read"], 0, 0, a) == allow
				if got != want(a, v, v2) {
					t.Errorf("%s %#x (%#x): argument %#x: filter says %v", op, v, v2, a, got)
				}
			}
		}
	}
}

// TestRepeatedIndexIsAnyOf: a rule comparing one argument twice matches
// when either comparison does (runc's reading); other rules need all.
func TestRepeatedIndexIsAnyOf(t *testing.T) {
	read := syscallNumbers["SCMP_ARCH_X86_64"]["read"]
	p := &specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno,
		Architectures: []specs.Arch{specs.ArchX86_64},
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"read"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: 1, Op: specs.OpEqualTo}, {Index: 0, Value: 2, Op: specs.OpEqualTo}}},
			{Names: []string{"write"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: 1, Op: specs.OpEqualTo}, {Index: 1, Value: 2, Op: specs.OpEqualTo}}},
		},
	}
	prog, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	write := syscallNumbers["SCMP_ARCH_X86_64"]["write"]
	for _, c := range []struct {
		nr   uint32
		args []uint64
		want uint32
	}{
		{read, []uint64{1}, allow}, {read, []uint64{2}, allow}, {read, []uint64{3}, eperm},
		{write, []uint64{1, 2}, allow}, {write, []uint64{1, 3}, eperm}, {write, []uint64{2, 2}, eperm},
	} {
		if got := run(t, prog, unix.AUDIT_ARCH_X86_64, c.nr, c.args...); got != c.want {
			t.Errorf("call %d %v: %#x, want %#x", c.nr, c.args, got, c.want)
		}
	}
}

// TestFarJumps: a block longer than a conditional jump reaches still
// compiles to a program that skips it.
func TestFarJumps(t *testing.T) {
	var args []specs.LinuxSeccompArg
	var syscalls []specs.LinuxSyscall
	for i := range 120 {
		args = append(args, specs.LinuxSeccompArg{Index: uint(i % 6), Value: uint64(i), Op: specs.OpGreaterEqual})
	}
	syscalls = append(syscalls, specs.LinuxSyscall{Names: []string{"read"}, Action: specs.ActAllow, Args: args},
		specs.LinuxSyscall{Names: []string{"close"}, Action: specs.ActAllow})
	prog, err := Compile(&specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Architectures: []specs.Arch{specs.ArchX86_64}, Syscalls: syscalls})
	if err != nil {
		t.Fatal(err)
	}
	if len(prog) < 300 {
		t.Fatalf("program of %d instructions: the block is not long enough for this test", len(prog))
	}
	if got := run(t, prog, unix.AUDIT_ARCH_X86_64, syscallNumbers["SCMP_ARCH_X86_64"]["close"]); got != allow {
		t.Errorf("close: %#x, want allow", got)
	}
	if got := run(t, prog, unix.AUDIT_ARCH_X86_64, syscallNumbers["SCMP_ARCH_X86_64"]["read"], 200, 200, 200, 200, 200, 200); got != allow {
		t.Errorf("read (any of its rules): %#x, want allow", got)
	}
	if got := run(t, prog, unix.AUDIT_ARCH_X86_64, syscallNumbers["SCMP_ARCH_X86_64"]["open"]); got != eperm {
		t.Errorf("open: %#x, want EPERM", got)
	}
}

// TestInstallInKernel loads the default program in a child process (the
// test binary again) and makes real calls under it.
func TestInstallInKernel(t *testing.T) {
	if os.Getenv("SECCOMP_TEST_CHILD") == "1" {
		seccompChild()
		return
	}
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skipf("no table for %s", runtime.GOARCH)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestInstallInKernel$", "-test.v")
	cmd.Env = append(os.Environ(), "SECCOMP_TEST_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, want := range []string{"getpid ok", "keyctl EPERM", "unshare EPERM", "clone3 ENOSYS",
		"newer ENOSYS", "personality ok", "socket inet ok", "socket vsock EPERM", "status Seccomp:\t2"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("child's output lacks %q:\n%s", want, out)
		}
	}
}

// seccompChild installs the filter on its locked thread, and reports what
// calls made on that thread give.
func seccompChild() {
	runtime.LockOSThread()
	prog, err := DefaultProgram(dockerCaps)
	if err != nil {
		fmt.Println("compile:", err)
		os.Exit(2)
	}
	if err := Install(prog); err != nil {
		fmt.Println("install:", err)
		os.Exit(2)
	}
	say := func(what string, errno unix.Errno) {
		switch errno {
		case 0:
			fmt.Println(what, "ok")
		default:
			fmt.Println(what, unix.ErrnoName(errno))
		}
	}
	_, _, e := unix.RawSyscall(unix.SYS_GETPID, 0, 0, 0)
	say("getpid", e)
	_, _, e = unix.RawSyscall(unix.SYS_KEYCTL, 0, 0, 0)
	say("keyctl", e)
	_, _, e = unix.RawSyscall(unix.SYS_UNSHARE, unix.CLONE_NEWUTS, 0, 0)
	say("unshare", e)
	_, _, e = unix.RawSyscall(unix.SYS_CLONE3, 0, 0, 0)
	say("clone3", e)
	_, _, e = unix.RawSyscall(1000, 0, 0, 0)
	say("newer", e)
	_, _, e = unix.RawSyscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0)
	say("personality", e)
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM, 0)
	say("socket inet", e)
	if e == 0 {
		unix.Close(int(fd))
	}
	_, _, e = unix.RawSyscall(unix.SYS_SOCKET, unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	say("socket vsock", e)
	status, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		fmt.Println("status:", err)
		os.Exit(2)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "Seccomp:") {
			fmt.Println("status", l)
		}
	}
	os.Exit(0)
}
