package seccomp

//go:generate go run gen_tables.go

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Supported reports whether builder has the system call tables of the
// host's architecture (amd64, arm64), which a filter needs.
func Supported() bool {
	return runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64"
}

// DefaultProgram is the BPF program of Docker's default profile for a
// command whose bounding set is caps (capability names, "CAP_CHOWN"),
// made once per set.
func DefaultProgram(caps []string) ([]unix.SockFilter, error) {
	key := fmt.Sprint(caps)
	programsMu.Lock()
	defer programsMu.Unlock()
	if p, ok := programs[key]; ok {
		return p, nil
	}
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: caps}}}
	profile, err := seccomp.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("seccomp: default profile: %w", err)
	}
	p, err := Compile(profile)
	if err != nil {
		return nil, err
	}
	programs[key] = p
	return p, nil
}

var (
	programsMu sync.Mutex
	programs   = map[string][]unix.SockFilter{}
)
