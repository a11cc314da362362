//go:build linux

// Package seccomp gives a RUN the system-call filter BuildKit gives
// it: Docker's default profile (github.com/moby/profiles/seccomp, the
// package BuildKit uses), for the capabilities the command has, compiled
// here to a classic BPF program the kernel loads (seccomp(2)) — runc
// compiles it with libseccomp, which would need cgo.
//
// The program follows runc's rules: rules are tried in the profile's
// order and the first that matches gives the action; the arguments of
// one rule must all match, except that a rule comparing one argument
// more than once matches when any of those comparisons does (runc's
// reading, opencontainers/runc#2735); a system call newer than any the
// profile names returns ENOSYS, so that a C library falls back to an
// older call (runc's patchbpf); a call of an architecture the profile
// does not list returns ENOSYS too.
package seccomp

import (
	"errors"
	"fmt"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Return values of a filter (linux/seccomp.h).
const (
	retKillProcess = 0x80000000
	retKillThread  = 0x00000000
	retTrap        = 0x00030000
	retErrno       = 0x00050000
	retTrace       = 0x7ff00000
	retLog         = 0x7ffc0000
	retAllow       = 0x7fff0000
)

// Offsets in struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// x32Bit marks the x32 ABI's system calls on x86_64 (__X32_SYSCALL_BIT).
const x32Bit = 0x40000000

// archInfo is what the filter needs of one architecture.
type archInfo struct {
	audit uint32 // AUDIT_ARCH_*
	is64  bool
}

var archs = map[specs.Arch]archInfo{
	specs.ArchX86_64:  {unix.AUDIT_ARCH_X86_64, true},
	specs.ArchX86:     {unix.AUDIT_ARCH_I386, false},
	specs.ArchAARCH64: {unix.AUDIT_ARCH_AARCH64, true},
	specs.ArchARM:     {unix.AUDIT_ARCH_ARM, false},
}

// Compile returns the BPF program of profile p. Architectures of p
// without a table here (x32, mips, ...) are left out: their calls
// return ENOSYS.
func Compile(p *specs.LinuxSeccomp) ([]unix.SockFilter, error) {
	if p == nil {
		return nil, errors.New("seccomp: no profile")
	}
	def, err := action(p.DefaultAction, p.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("seccomp: default action: %w", err)
	}
	var a asm
	var sections []specs.Arch
	for _, arch := range p.Architectures {
		if _, ok := archs[arch]; ok && syscallNumbers[string(arch)] != nil && !slices.Contains(sections, arch) {
			sections = append(sections, arch)
		}
	}
	if len(sections) == 0 {
		return nil, fmt.Errorf("seccomp: the profile lists no architecture builder can filter (%v)", p.Architectures)
	}
	a.load(offArch)
	for _, arch := range sections {
		a.jeq(archs[arch].audit, "arch:"+string(arch), "")
	}
	a.ret(retErrno | uint32(unix.ENOSYS))
	for _, arch := range sections {
		if err := a.section(arch, p, def); err != nil {
			return nil, err
		}
	}
	return a.assemble()
}

// section is the program's part for the calls of arch.
func (a *asm) section(arch specs.Arch, p *specs.LinuxSeccomp, def uint32) error {
	info := archs[arch]
	nums := syscallNumbers[string(arch)]
	a.label("arch:" + string(arch))
	a.load(offNr)
	if arch == specs.ArchX86_64 {
		a.jge(x32Bit, "x32:"+string(arch), "")
	}
	// Every rule, in the profile's order, each in its call's block; a
	// block that no rule matches ends with the default action.
	type rule struct {
		act  uint32
		args []specs.LinuxSeccompArg
	}
	var order []uint32
	rules := map[uint32][]rule{}
	last := uint32(0)
	for _, sc := range p.Syscalls {
		act, err := action(sc.Action, sc.ErrnoRet)
		if err != nil {
			return fmt.Errorf("seccomp: %v: %w", sc.Names, err)
		}
		for _, name := range sc.Names {
			nr, ok := nums[name]
			if !ok {
				continue // not a call of arch (runc skips them too)
			}
			last = max(last, nr)
			if _, seen := rules[nr]; !seen {
				order = append(order, nr)
			}
			if len(sc.Args) > 0 && repeatsIndex(sc.Args) {
				for _, arg := range sc.Args {
					rules[nr] = append(rules[nr], rule{act, []specs.LinuxSeccompArg{arg}})
				}
				continue
			}
			rules[nr] = append(rules[nr], rule{act, sc.Args})
		}
	}
	for i, nr := range order {
		next := fmt.Sprintf("%s:%d", arch, i)
		a.jeq(nr, "", next)
		for j, r := range rules[nr] {
			fail := fmt.Sprintf("%s:%d:%d", arch, i, j)
			for _, arg := range r.args {
				if err := a.compare(arg, info.is64, fail); err != nil {
					return err
				}
			}
			a.ret(r.act)
			a.label(fail)
		}
		a.ret(def)
		a.label(next)
	}
	if def&0xffff0000 == retErrno || def == retKillThread || def == retKillProcess {
		a.jgt(last, "enosys:"+string(arch), "")
	}
	a.ret(def)
	a.label("enosys:" + string(arch))
	a.label("x32:" + string(arch))
	a.ret(retErrno | uint32(unix.ENOSYS))
	return nil
}

// repeatsIndex reports whether args compare one argument more than once.
func repeatsIndex(args []specs.LinuxSeccompArg) bool {
	seen := map[uint]bool{}
	for _, arg := range args {
		if seen[arg.Index] {
			return true
		}
		seen[arg.Index] = true
	}
	return false
}

// compare jumps to fail unless the call's argument matches arg. A 32-bit
// architecture's arguments are 32 bits: their upper half is not compared
// (it must be 0 in the value for an equality to match).
func (a *asm) compare(arg specs.LinuxSeccompArg, is64 bool, fail string) error {
	if arg.Index > 5 {
		return fmt.Errorf("seccomp: argument index %d out of range", arg.Index)
	}
	lo, hi := uint32(offArgs+8*arg.Index), uint32(offArgs+8*arg.Index+4)
	v, v2 := arg.Value, arg.ValueTwo
	if !is64 {
		// Only the lower halves exist: a value that does not fit decides
		// the comparison alone.
		if arg.Op == specs.OpMaskedEqual {
			v &= 0xffffffff
		}
		if wide := v>>32 != 0 || (arg.Op == specs.OpMaskedEqual && v2>>32 != 0); wide {
			switch arg.Op {
			case specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual:
				return nil // true of every 32-bit value
			}
			a.ja(fail)
			return nil
		}
	}
	vlo, vhi := uint32(v), uint32(v>>32)
	ok := a.fresh("ok")
	switch arg.Op {
	case specs.OpEqualTo, specs.OpNotEqual:
		match, miss := ok, fail
		if arg.Op == specs.OpNotEqual {
			match, miss = fail, ok
		}
		if is64 {
			a.load(hi)
			a.jeq(vhi, "", miss)
		}
		a.load(lo)
		a.jeq(vlo, match, miss)
	case specs.OpMaskedEqual:
		if is64 {
			a.load(hi)
			a.and(vhi)
			a.jeq(uint32(v2>>32), "", fail)
		}
		a.load(lo)
		a.and(vlo)
		a.jeq(uint32(v2), ok, fail)
	case specs.OpGreaterThan, specs.OpGreaterEqual, specs.OpLessThan, specs.OpLessEqual:
		// Unsigned 64-bit order: the upper halves decide unless equal.
		greater := arg.Op == specs.OpGreaterThan || arg.Op == specs.OpGreaterEqual
		above, below := ok, fail
		if !greater {
			above, below = fail, ok
		}
		if is64 {
			a.load(hi)
			a.jgt(vhi, above, "")
			a.jeq(vhi, "", below)
		}
		a.load(lo)
		switch arg.Op {
		case specs.OpGreaterThan:
			a.jgt(vlo, ok, fail)
		case specs.OpGreaterEqual:
			a.jge(vlo, ok, fail)
		case specs.OpLessThan:
			a.jge(vlo, fail, ok)
		case specs.OpLessEqual:
			a.jgt(vlo, fail, ok)
		}
	default:
		return fmt.Errorf("seccomp: unknown comparison %q", arg.Op)
	}
	a.label(ok)
	return nil
}

// action is the filter's return value for a profile action.
func action(act specs.LinuxSeccompAction, errnoRet *uint) (uint32, error) {
	errno := uint32(unix.EPERM)
	if errnoRet != nil {
		errno = uint32(*errnoRet) & 0xffff
	}
	switch act {
	case specs.ActAllow:
		return retAllow, nil
	case specs.ActErrno:
		return retErrno | errno, nil
	case specs.ActKill, specs.ActKillThread:
		return retKillThread, nil
	case specs.ActKillProcess:
		return retKillProcess, nil
	case specs.ActTrap:
		return retTrap, nil
	case specs.ActTrace:
		return retTrace | errno, nil
	case specs.ActLog:
		return retLog, nil
	}
	return 0, fmt.Errorf("unsupported action %q", act)
}

// asm assembles a program whose jumps name labels.
type asm struct {
	insns  []insn
	labels map[string]int
	n      int
}

type insn struct {
	code   uint16
	k      uint32
	jt, jf string // conditional jumps: "" is the next instruction
	ja     string // an unconditional jump's target
	label  string // set: not an instruction, the label of the next one
}

func (a *asm) emit(i insn) { a.insns = append(a.insns, i) }

func (a *asm) load(off uint32) {
	a.emit(insn{code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, k: off})
}
func (a *asm) and(k uint32) { a.emit(insn{code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, k: k}) }
func (a *asm) ret(k uint32) { a.emit(insn{code: unix.BPF_RET | unix.BPF_K, k: k}) }
func (a *asm) ja(to string) { a.emit(insn{code: unix.BPF_JMP | unix.BPF_JA, ja: to}) }
func (a *asm) jeq(k uint32, jt, jf string) {
	a.emit(insn{code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, k: k, jt: jt, jf: jf})
}
func (a *asm) jgt(k uint32, jt, jf string) {
	a.emit(insn{code: unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K, k: k, jt: jt, jf: jf})
}
func (a *asm) jge(k uint32, jt, jf string) {
	a.emit(insn{code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, k: k, jt: jt, jf: jf})
}
func (a *asm) label(name string) { a.emit(insn{label: name}) }

// fresh returns a label name not used before.
func (a *asm) fresh(prefix string) string {
	a.n++
	return fmt.Sprintf("%s#%d", prefix, a.n)
}

// assemble resolves the labels. A conditional jump reaches at most 255
// instructions ahead; a farther target gets an unconditional jump (which
// reaches any) placed right after it.
func (a *asm) assemble() ([]unix.SockFilter, error) {
	for {
		pos, at := a.layout()
		far := -1
		for i, in := range a.insns {
			if in.label != "" || in.code&0x07 != unix.BPF_JMP || in.code&0xf0 == unix.BPF_JA {
				continue
			}
			for _, t := range []string{in.jt, in.jf} {
				if t != "" && at[t]-(pos[i]+1) > 255 {
					far = i
				}
			}
			if far >= 0 {
				break
			}
		}
		if far < 0 {
			break
		}
		// Route the far target through a trampoline after the jump.
		in := &a.insns[far]
		tramp := a.fresh("far")
		skip := a.fresh("skip")
		var ins []insn
		if in.jt != "" && at[in.jt]-(pos[far]+1) > 255 {
			ins = append(ins, insn{code: unix.BPF_JMP | unix.BPF_JA, ja: skip}, insn{label: tramp}, insn{code: unix.BPF_JMP | unix.BPF_JA, ja: in.jt})
			in.jt = tramp
		} else {
			ins = append(ins, insn{code: unix.BPF_JMP | unix.BPF_JA, ja: skip}, insn{label: tramp}, insn{code: unix.BPF_JMP | unix.BPF_JA, ja: in.jf})
			in.jf = tramp
		}
		// The jump that falls through to the trampoline's skip keeps its
		// meaning: "" (next instruction) is now the ja over it, which
		// lands where the next instruction was.
		ins = append(ins, insn{label: skip})
		a.insns = slices.Insert(a.insns, far+1, ins...)
	}
	pos, at := a.layout()
	var out []unix.SockFilter
	for i, in := range a.insns {
		if in.label != "" {
			continue
		}
		f := unix.SockFilter{Code: in.code, K: in.k}
		rel := func(t string) (int, error) {
			if t == "" {
				return 0, nil
			}
			to, ok := at[t]
			if !ok {
				return 0, fmt.Errorf("seccomp: unknown label %q", t)
			}
			d := to - (pos[i] + 1)
			if d < 0 {
				return 0, fmt.Errorf("seccomp: backward jump to %q", t)
			}
			return d, nil
		}
		if in.code&0x07 == unix.BPF_JMP {
			if in.code&0xf0 == unix.BPF_JA {
				d, err := rel(in.ja)
				if err != nil {
					return nil, err
				}
				f.K = uint32(d)
			} else {
				jt, err := rel(in.jt)
				if err != nil {
					return nil, err
				}
				jf, err := rel(in.jf)
				if err != nil {
					return nil, err
				}
				f.Jt, f.Jf = uint8(jt), uint8(jf)
			}
		}
		out = append(out, f)
	}
	if len(out) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp: program of %d instructions, over the kernel's %d", len(out), unix.BPF_MAXINSNS)
	}
	return out, nil
}

// layout returns each instruction's position in the program (labels take
// none) and each label's.
func (a *asm) layout() ([]int, map[string]int) {
	pos := make([]int, len(a.insns))
	at := map[string]int{}
	n := 0
	for i, in := range a.insns {
		pos[i] = n
		if in.label != "" {
			at[in.label] = n
			continue
		}
		n++
	}
	return pos, at
}
