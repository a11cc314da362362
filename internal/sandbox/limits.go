package sandbox

import (
	"fmt"
	"strconv"
	"strings"
)

// Limits are the resource limits of RUN steps, named as docker build's
// options. Zero values mean "no limit" (ShmSize: runc's 64 MiB). Memory,
// swap, CPU and pids limits need a cgroup (see Cgroups); ShmSize and
// Ulimits do not.
type Limits struct {
	// Memory is the memory limit in bytes (--memory).
	Memory int64
	// MemorySwap is memory plus swap in bytes (--memory-swap): -1 is
	// unlimited swap, 0 with Memory set is twice Memory (docker's default).
	MemorySwap int64
	// CPUQuota is the CPU time in µs the step may use per CPUPeriod
	// (--cpu-quota; --cpus=N is N×CPUPeriod); CPUPeriod is 100000 µs
	// when 0.
	CPUQuota, CPUPeriod int64
	// CpusetCPUs are the CPUs the step may run on ("0-1,3").
	CpusetCPUs string
	// PidsLimit bounds the number of tasks of the step (--pids-limit).
	PidsLimit int64
	// ShmSize is the size of /dev/shm in bytes (--shm-size).
	ShmSize int64
	// Ulimits are resource limits of the command (--ulimit).
	Ulimits []Ulimit
}

// Ulimit is one --ulimit NAME=SOFT[:HARD]; -1 is unlimited.
type Ulimit struct {
	Name       string
	Soft, Hard int64
}

// ulimitNames are docker's --ulimit names.
var ulimitNames = []string{
	"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
	"nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
}

// ParseUlimit parses docker's --ulimit NAME=SOFT[:HARD].
func ParseUlimit(s string) (Ulimit, error) {
	name, vals, ok := strings.Cut(s, "=")
	if !ok || !contains(ulimitNames, name) {
		return Ulimit{}, fmt.Errorf("--ulimit %q: want NAME=SOFT[:HARD] with NAME one of %s", s, strings.Join(ulimitNames, ", "))
	}
	softS, hardS, hasHard := strings.Cut(vals, ":")
	soft, err := strconv.ParseInt(softS, 10, 64)
	if err != nil || soft < -1 {
		return Ulimit{}, fmt.Errorf("--ulimit %q: invalid soft limit %q", s, softS)
	}
	hard := soft
	if hasHard {
		if hard, err = strconv.ParseInt(hardS, 10, 64); err != nil || hard < -1 {
			return Ulimit{}, fmt.Errorf("--ulimit %q: invalid hard limit %q", s, hardS)
		}
	}
	if hard != -1 && (soft == -1 || soft > hard) {
		return Ulimit{}, fmt.Errorf("--ulimit %q: soft limit %d exceeds hard limit %d", s, soft, hard)
	}
	return Ulimit{Name: name, Soft: soft, Hard: hard}, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// NeedsCgroup reports whether the limits need a cgroup.
func (l Limits) NeedsCgroup() bool {
	return l.Memory != 0 || l.MemorySwap != 0 || l.CPUQuota != 0 || l.CPUPeriod != 0 || l.CpusetCPUs != "" || l.PidsLimit != 0
}

// Check refuses inconsistent limits.
func (l Limits) Check() error {
	switch {
	case l.Memory < 0:
		return fmt.Errorf("--memory must be positive")
	case l.MemorySwap != 0 && l.Memory == 0:
		return fmt.Errorf("--memory-swap needs --memory")
	case l.MemorySwap > 0 && l.MemorySwap < l.Memory:
		return fmt.Errorf("--memory-swap (%d bytes) must be at least --memory (%d bytes)", l.MemorySwap, l.Memory)
	case l.MemorySwap < -1:
		return fmt.Errorf("--memory-swap must be positive or -1 (unlimited)")
	case l.CPUQuota < 0 || l.CPUPeriod < 0:
		return fmt.Errorf("--cpu-quota and --cpu-period must be positive")
	case l.CPUPeriod != 0 && (l.CPUPeriod < 1000 || l.CPUPeriod > 1000000):
		return fmt.Errorf("--cpu-period must be between 1000 and 1000000 µs")
	case l.CPUQuota != 0 && l.CPUQuota < 1000:
		return fmt.Errorf("--cpu-quota must be at least 1000 µs")
	case l.PidsLimit < -1:
		return fmt.Errorf("--pids-limit must be positive or -1 (unlimited)")
	case l.ShmSize < 0:
		return fmt.Errorf("--shm-size must be positive")
	}
	return nil
}

// MiB formats a byte count as docker reports limits: "512 MiB".
func MiB(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
