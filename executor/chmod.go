package executor

import (
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"syscall"
)

// copyModeBits returns permission bits plus setuid/setgid/sticky in Unix
// encoding.
func copyModeBits(m fs.FileMode) uint32 {
	bits := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		bits |= syscall.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		bits |= syscall.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		bits |= syscall.S_ISVTX
	}
	return bits
}

// copyUnixMode converts Unix permission and special bits to an fs.FileMode.
func copyUnixMode(bits uint32) fs.FileMode {
	m := fs.FileMode(bits & 0o777)
	if bits&syscall.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if bits&syscall.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if bits&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// copyChmodUmask is the file creation mask that symbolic --chmod clauses
// without a "who" ("+x", "=rw") are relative to: none, as BuildKit's copy
// (tonistiigi/fsutil) parses them with umask 0, so "+w" is "a+w"; a
// constant keeps the result independent of the builder's own umask.
const copyChmodUmask = 0

// copyChmodWho returns the mode bits a "who" letter names (0 for none).
func copyChmodWho(l byte) uint32 {
	switch l {
	case 'u':
		return 0o4700
	case 'g':
		return 0o2070
	case 'o':
		return 0o0007
	case 'a':
		return 0o6777
	}
	return 0
}

// copyChmodPerm returns the bits a permission letter (r, w, x, s, t) sets
// across all classes.
func copyChmodPerm(l byte) uint32 {
	switch l {
	case 'r':
		return 0o444
	case 'w':
		return 0o222
	case 'x':
		return 0o111
	case 's':
		return 0o6000
	case 't':
		return 0o1000
	}
	return 0
}

// copyChmod is a parsed --chmod: an octal mode, or chmod(1) symbolic
// clauses ("u+x,g-w", "a=r", "go=u-w") applied to each entry's own mode,
// with BSD setmode semantics as BuildKit's parser has them.
type copyChmod struct {
	octal   uint32
	actions []copyChmodAction // nil for an octal mode
}

// copyChmodAction is one operator of a symbolic clause: "ug+rx" is who
// u and g, op '+', perm "rx".
type copyChmodAction struct {
	who  uint32 // bits the clause's who letters name; 0 = all, umask-masked
	op   byte   // '+', '-' or '='
	perm string // letters from "rwxXst", or one of "ugo" to copy a class
}

// copyParseChmod parses --chmod: octal as before (with BuildKit's message
// when it looks numeric but is not a valid mode), or a symbolic mode.
func copyParseChmod(s string) (*copyChmod, error) {
	if s != "" && s[0] >= '0' && s[0] <= '9' {
		n, err := strconv.ParseUint(s, 8, 32)
		if err != nil || n > 0o7777 {
			return nil, fmt.Errorf("invalid chmod parameter: '%v'. it should be octal string and between 0 and 07777", s)
		}
		return &copyChmod{octal: uint32(n)}, nil
	}
	c := &copyChmod{}
	for _, clause := range strings.Split(s, ",") {
		acts, err := copyParseClause(clause)
		if err != nil {
			return nil, fmt.Errorf("invalid chmod parameter: '%v': %w (want octal 0-7777 or symbolic like u+x,g-w)", s, err)
		}
		c.actions = append(c.actions, acts...)
	}
	return c, nil
}

// copyParseClause parses one comma-separated clause: [ugoa]*, then one or
// more operators each with its permission letters.
func copyParseClause(clause string) ([]copyChmodAction, error) {
	i := 0
	var who uint32
	for ; i < len(clause) && copyChmodWho(clause[i]) != 0; i++ {
		who |= copyChmodWho(clause[i])
	}
	var acts []copyChmodAction
	for i < len(clause) {
		op := clause[i]
		if op != '+' && op != '-' && op != '=' {
			return nil, fmt.Errorf("unexpected %q in %q", op, clause)
		}
		j := i + 1
		for j < len(clause) && strings.IndexByte("rwxXstugo", clause[j]) >= 0 {
			j++
		}
		perm := clause[i+1 : j]
		if strings.ContainsAny(perm, "ugo") && len(perm) != 1 {
			return nil, fmt.Errorf("%q: a class to copy (u, g, o) stands alone", clause)
		}
		acts = append(acts, copyChmodAction{who: who, op: op, perm: perm})
		i = j
	}
	if len(acts) == 0 {
		return nil, fmt.Errorf("clause %q has no operator", clause)
	}
	return acts, nil
}

// apply returns the new permission and special bits of an entry whose
// bits are now mode.
func (c *copyChmod) apply(mode uint32, isDir bool) uint32 {
	if c.actions == nil {
		return c.octal
	}
	orig := mode
	for _, a := range c.actions {
		mode = a.apply(mode, orig, isDir)
	}
	return mode
}

func (a copyChmodAction) apply(mode, orig uint32, isDir bool) uint32 {
	who := a.who
	if who == 0 {
		who = 0o6777 &^ copyChmodUmask
	}
	perm := a.bits(mode, orig, isDir)
	set := perm & who
	if perm&0o1000 != 0 && (a.who == 0 || a.who&0o6770 != 0) { // sticky: not for "o" alone
		set |= 0o1000
	}
	switch a.op {
	case '+':
		return mode | set
	case '-':
		return mode &^ set
	}
	clear := a.who
	if clear == 0 {
		clear = 0o6777
	}
	return mode&^clear | set
}

// bits expands the permission letters against the entry, as BuildKit's
// mode parser (tonistiigi/dchapes-mode, BSD setmode) does: "X" with "+"
// or "=" is x for directories and entries that had an execute bit, with
// "-" it is x; a class letter copies that class's current bits.
func (a copyChmodAction) bits(mode, orig uint32, isDir bool) uint32 {
	var perm uint32
	for _, l := range []byte(a.perm) {
		switch class := strings.IndexByte("ogu", l); {
		case class >= 0: // copy that class's bits
			perm |= (mode >> (3 * class) & 7) * 0o111
		case l == 'X':
			if a.op == '-' || isDir || orig&0o111 != 0 {
				perm |= 0o111
			}
		default:
			perm |= copyChmodPerm(l)
		}
	}
	return perm
}
