package main

import (
	"fmt"
	"strconv"

	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/docker/go-units"
	"github.com/spf13/pflag"
)

// runFlags are the build options that say how RUN steps run: their
// isolation and resource limits (docker build's names). None is part of a
// cache key.
type runFlags struct {
	isolation  string
	memory     string
	memorySwap string
	cpuQuota   int64
	cpuPeriod  int64
	cpus       string
	cpusetCPUs string
	pidsLimit  int64
	shmSize    string
	ulimits    []string

	limits sandbox.Limits // parsed by check
}

// addRunFlags registers the options of runFlags, named as in docker build.
func addRunFlags(fs *pflag.FlagSet, f *runFlags) {
	fs.StringVar(&f.isolation, "isolation", "auto", "isolation of RUN steps: auto, namespaces (root), rootless (an ordinary user's user namespace) or chroot (unprivileged containers); \"default\" is auto")
	fs.StringVarP(&f.memory, "memory", "m", "", "memory limit of each RUN step (e.g. 512m; a cgroup)")
	fs.StringVar(&f.memorySwap, "memory-swap", "", "memory plus swap limit of each RUN step; -1 is unlimited swap (default twice --memory)")
	fs.Int64Var(&f.cpuQuota, "cpu-quota", 0, "CPU time (µs) each RUN step may use per --cpu-period")
	fs.Int64Var(&f.cpuPeriod, "cpu-period", 0, "CPU CFS period (µs) of --cpu-quota (default 100000)")
	fs.StringVar(&f.cpus, "cpus", "", "number of CPUs each RUN step may use (e.g. 1.5)")
	fs.StringVar(&f.cpusetCPUs, "cpuset-cpus", "", "CPUs RUN steps may run on (0-3, 0,1)")
	fs.Int64Var(&f.pidsLimit, "pids-limit", 0, "maximum number of processes of each RUN step (-1: unlimited)")
	fs.StringVar(&f.shmSize, "shm-size", "", "size of /dev/shm in RUN steps (default 64m)")
	fs.StringArrayVar(&f.ulimits, "ulimit", nil, "resource limit of RUN steps NAME=SOFT[:HARD], e.g. nofile=1024:2048 (repeatable)")
}

// check validates the values and parses the limits (--isolation was
// already acted on before the command ran: enterIsolation).
func (f *runFlags) check() error {
	if _, err := parseIsolation(f.isolation); err != nil {
		return err
	}
	l := &f.limits
	var err error
	if l.Memory, err = sizeFlag("--memory", f.memory, false); err != nil {
		return err
	}
	if l.MemorySwap, err = sizeFlag("--memory-swap", f.memorySwap, true); err != nil {
		return err
	}
	if l.ShmSize, err = sizeFlag("--shm-size", f.shmSize, false); err != nil {
		return err
	}
	l.CPUQuota, l.CPUPeriod, l.CpusetCPUs, l.PidsLimit = f.cpuQuota, f.cpuPeriod, f.cpusetCPUs, f.pidsLimit
	if f.cpus != "" {
		if f.cpuQuota != 0 || f.cpuPeriod != 0 {
			return fmt.Errorf("--cpus and --cpu-quota/--cpu-period cannot both be set")
		}
		n, err := strconv.ParseFloat(f.cpus, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("--cpus %q: want a positive number of CPUs", f.cpus)
		}
		l.CPUPeriod, l.CPUQuota = 100000, int64(n*100000)
	}
	for _, u := range f.ulimits {
		ul, err := sandbox.ParseUlimit(u)
		if err != nil {
			return err
		}
		l.Ulimits = append(l.Ulimits, ul)
	}
	return l.Check()
}

// sizeFlag parses a docker size ("512m", bytes without a unit); "" is 0
// and, where allowed, "-1" is unlimited.
func sizeFlag(name, v string, minusOne bool) (int64, error) {
	if v == "" {
		return 0, nil
	}
	if minusOne && v == "-1" {
		return -1, nil
	}
	n, err := units.RAMInBytes(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s %q: want a size such as 512m or 2g", name, v)
	}
	return n, nil
}

// cgroups prepares the build's cgroups when a limit needs one (nil when
// none does): a clear error where no cgroup can be used.
func (f *runFlags) cgroups() (*sandbox.Cgroups, error) {
	if !f.limits.NeedsCgroup() {
		return nil, nil
	}
	cg, err := sandbox.NewCgroups(f.limits)
	if err != nil {
		return nil, fmt.Errorf("--memory, --cpus, --cpuset-cpus, --pids-limit: %w", err)
	}
	return cg, nil
}

// snapshotter is the snapshotter kind to use under the isolation: chroot
// mounts nothing, so it needs the copy snapshotter.
func (iso isolation) snapshotter(requested string) (string, error) {
	if iso.mode != sandbox.IsolationChroot {
		return requested, nil
	}
	switch requested {
	case "", "auto", "copy":
		return "copy", nil
	}
	return "", fmt.Errorf("--snapshotter %s: isolation chroot mounts nothing; it needs the copy snapshotter", requested)
}
