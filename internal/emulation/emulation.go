// Package emulation says which platforms' programs this machine can run:
// its own, and those a user-mode emulator registered in binfmt_misc runs
// (Debian's qemu-user-static). A RUN for a foreign platform works inside
// the sandbox only when the emulator was registered with the F flag: the
// kernel then opens the interpreter at registration, so it need not exist
// in the build's root filesystem.
package emulation

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BinfmtDir is where the kernel lists binfmt_misc handlers.
const BinfmtDir = "/proc/sys/fs/binfmt_misc"

// elfArch is how a platform's executables start: ELF class (1: 32-bit,
// 2: 64-bit), data encoding (1: little, 2: big endian) and e_machine.
type elfArch struct {
	class, data byte
	machine     uint16
}

// elfArches maps GOARCH-style architectures to their ELF identity.
var elfArches = map[string]elfArch{
	"amd64":    {2, 1, 62},
	"386":      {1, 1, 3},
	"arm64":    {2, 1, 183},
	"arm":      {1, 1, 40},
	"ppc64le":  {2, 1, 21},
	"ppc64":    {2, 2, 21},
	"s390x":    {2, 2, 22},
	"riscv64":  {2, 1, 243},
	"mips64le": {2, 1, 8},
	"mips64":   {2, 2, 8},
	"mipsle":   {1, 1, 8},
	"mips":     {1, 2, 8},
	"loong64":  {2, 1, 258},
}

// header is the start of an ELF executable of a: what binfmt_misc
// matches its handlers' magic against.
func (a elfArch) header() []byte {
	h := make([]byte, 20)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = a.class, a.data, 1 // EI_CLASS, EI_DATA, EI_VERSION
	order := binary.ByteOrder(binary.LittleEndian)
	if a.data == 2 {
		order = binary.BigEndian
	}
	order.PutUint16(h[16:], 2) // e_type: ET_EXEC
	order.PutUint16(h[18:], a.machine)
	return h
}

// Handler is one binfmt_misc registration.
type Handler struct {
	Name        string
	Enabled     bool
	Interpreter string
	Flags       string
	Offset      int
	Magic, Mask []byte
}

// matches reports whether a file starting with header is run by h.
func (h Handler) matches(header []byte) bool {
	if !h.Enabled || len(h.Magic) == 0 || h.Offset+len(h.Magic) > len(header) {
		return false
	}
	for i, m := range h.Magic {
		b := header[h.Offset+i]
		if i < len(h.Mask) {
			b &= h.Mask[i]
		}
		if b != m {
			return false
		}
	}
	return true
}

// ReadHandlers reads the handlers registered in dir (BinfmtDir). A dir
// that does not exist (binfmt_misc not mounted) holds none.
func ReadHandlers(dir string) ([]Handler, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Handler
	for _, e := range entries {
		if e.Name() == "register" || e.Name() == "status" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // removed meanwhile
		}
		if h, ok := parseHandler(e.Name(), data); ok {
			out = append(out, h)
		}
	}
	return out, nil
}

// parseHandler reads a handler file: "enabled", "interpreter PATH",
// "flags: PF", "offset N", "magic HEX", "mask HEX" (extension handlers
// have no magic and are ignored).
func parseHandler(name string, data []byte) (Handler, bool) {
	h := Handler{Name: name}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		switch k {
		case "enabled":
			h.Enabled = true
		case "interpreter":
			h.Interpreter = v
		case "flags:":
			h.Flags = v
		case "offset":
			h.Offset, _ = strconv.Atoi(v)
		case "magic":
			h.Magic, _ = hex.DecodeString(v)
		case "mask":
			h.Mask, _ = hex.DecodeString(v)
		}
	}
	return h, len(h.Magic) > 0
}

// Host describes what this machine runs: natively (its own architecture
// and those its CPUs run too), and the emulators of binfmt_misc.
type Host struct {
	Arch     string // runtime.GOARCH
	Handlers []Handler
}

var (
	hostOnce sync.Once
	host     Host
	hostErr  error
)

// Detect reads this machine's binfmt_misc handlers, once per process.
func Detect() (Host, error) {
	hostOnce.Do(func() {
		host.Arch = runtime.GOARCH
		host.Handlers, hostErr = ReadHandlers(BinfmtDir)
	})
	return host, hostErr
}

// native lists what an architecture's CPUs also run.
var native = map[string][]string{
	"amd64": {"amd64", "386"},
	"arm64": {"arm64"},
}

// CanRun returns nil if programs of platform p run here, natively or
// emulated, and otherwise an error that says what to install. how is
// "native" or the emulator's name.
func (h Host) CanRun(p v1.Platform) (how string, err error) {
	if p.OS != "" && p.OS != "linux" {
		return "", fmt.Errorf("RUN needs %s: only linux programs can run here", format(p))
	}
	arch := p.Architecture
	compat := native[h.Arch]
	if compat == nil {
		compat = []string{h.Arch}
	}
	for _, a := range compat {
		if a == arch {
			return "native", nil
		}
	}
	ea, ok := elfArches[arch]
	if !ok {
		return "", fmt.Errorf("RUN needs %s: builder does not know how that architecture's programs start", format(p))
	}
	header := ea.header()
	for _, x := range h.Handlers {
		if !x.matches(header) {
			continue
		}
		if !strings.Contains(x.Flags, "F") {
			return "", fmt.Errorf("RUN needs %s: emulator %s (%s) is registered without the F flag, so it cannot run inside a build's root; register it with F (Debian's qemu-user-static does)", format(p), x.Name, x.Interpreter)
		}
		return x.Name, nil
	}
	return "", fmt.Errorf("RUN needs %s: no emulator registered; install qemu-user-static (and mount binfmt_misc on %s)", format(p), BinfmtDir)
}

func format(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}
