package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Cgroups puts every RUN step in a child cgroup of the builder's own with
// the build's Limits: cgroup v2 where the controller is there (a
// delegated subtree when rootless), else the controller's v1 hierarchy (a
// root builder on a legacy or hybrid host). The cgroups of a build live
// below one directory per hierarchy, <own>/builder-<pid>; each step's,
// run-<n>, is removed when the step ends, killed or not, and a watchdog
// process removes what a killed builder leaves (see ReaperArg).
type Cgroups struct {
	limits Limits
	hs     []*hierarchy
	seq    atomic.Int64
	reaper *os.File // the watchdog's stdin: closing it (or dying) starts its cleanup
	reapC  *exec.Cmd
	mu     sync.Mutex
}

// hierarchy is one cgroup hierarchy the limits need.
type hierarchy struct {
	v2    bool
	own   string   // the builder's cgroup directory
	ctrls []string // the controllers used in it
	build string   // <own>/builder-<pid>, made by NewCgroups
}

// cgMount is a cgroup file system in /proc/self/mountinfo.
type cgMount struct {
	v2          bool
	point, root string
	ctrls       []string // v1: the controllers of the hierarchy
	super       string   // the super options (v1: controllers, name=)
}

// neededControllers are the controllers l needs, in a fixed order.
func (l Limits) neededControllers() []string {
	var out []string
	if l.CPUQuota != 0 || l.CPUPeriod != 0 {
		out = append(out, "cpu")
	}
	if l.CpusetCPUs != "" {
		out = append(out, "cpuset")
	}
	if l.Memory != 0 || l.MemorySwap != 0 {
		out = append(out, "memory")
	}
	if l.PidsLimit != 0 {
		out = append(out, "pids")
	}
	return out
}

// NewCgroups prepares the cgroups of a build with limits (which must need
// one): it finds each controller's hierarchy and the builder's cgroup in
// it, makes sure the controllers are usable there, and creates the
// build's directory. The error says what is missing: a controller, its
// delegation to an ordinary user, a writable cgroup.
func NewCgroups(l Limits) (*Cgroups, error) {
	hs, err := ownHierarchies(l)
	if err != nil {
		return nil, err
	}
	c := &Cgroups{limits: l, hs: hs}
	if err := c.startReaper(); err != nil {
		return nil, err
	}
	for _, h := range hs {
		if err := h.prepare(); err != nil {
			_ = c.Close()
			return nil, err
		}
		c.watch(h.build)
	}
	return c, nil
}

// ownHierarchies finds, in this process's mount table and cgroup
// membership, the hierarchies of the controllers l's limits need.
func ownHierarchies(l Limits) ([]*hierarchy, error) {
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	return findHierarchies(string(mountinfo), string(self), l.neededControllers(), readWords)
}

// findHierarchies picks, for every needed controller, cgroup v2 if the v2
// hierarchy has it (controllersOf reads a cgroup.controllers file), else
// the v1 hierarchy that holds it, and returns them with the builder's own
// cgroup directory in each.
func findHierarchies(mountinfo, self string, needed []string, controllersOf func(string) ([]string, error)) ([]*hierarchy, error) {
	mounts := parseCgroupMounts(mountinfo)
	paths := parseProcCgroup(self)
	var v2 *cgMount
	for i := range mounts {
		if mounts[i].v2 {
			v2 = &mounts[i]
			break
		}
	}
	var v2ctrls []string
	if v2 != nil {
		v2ctrls, _ = controllersOf(filepath.Join(v2.point, "cgroup.controllers"))
	}
	var out []*hierarchy
	add := func(v2 bool, dir, ctrl string) {
		for _, h := range out {
			if h.own == dir {
				h.ctrls = append(h.ctrls, ctrl)
				return
			}
		}
		out = append(out, &hierarchy{v2: v2, own: dir, ctrls: []string{ctrl}})
	}
	for _, ctrl := range needed {
		if v2 != nil && slices.Contains(v2ctrls, ctrl) {
			p, ok := paths[""]
			if !ok {
				return nil, fmt.Errorf("cgroup v2 is mounted but /proc/self/cgroup has no v2 entry")
			}
			add(true, cgroupDir(*v2, p), ctrl)
			continue
		}
		m := slices.IndexFunc(mounts, func(m cgMount) bool { return !m.v2 && slices.Contains(m.ctrls, ctrl) })
		if m < 0 {
			return nil, fmt.Errorf("RUN resource limits need the cgroup controller %q, which this host does not have (neither cgroup v2 nor a v1 hierarchy lists it)", ctrl)
		}
		p, ok := paths[ctrl]
		if !ok {
			return nil, fmt.Errorf("cgroup v1 controller %q is mounted but /proc/self/cgroup has no entry for it", ctrl)
		}
		add(false, cgroupDir(mounts[m], p), ctrl)
	}
	return out, nil
}

// parseCgroupMounts lists the cgroup file systems of a mountinfo.
func parseCgroupMounts(mountinfo string) []cgMount {
	var out []cgMount
	for _, line := range strings.Split(mountinfo, "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		switch g[0] {
		case "cgroup2":
			out = append(out, cgMount{v2: true, point: unescapeMount(f[4]), root: f[3]})
		case "cgroup":
			var ctrls []string
			for _, o := range strings.Split(g[2], ",") {
				switch o {
				case "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio", "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc":
					ctrls = append(ctrls, o)
				}
			}
			out = append(out, cgMount{point: unescapeMount(f[4]), root: f[3], ctrls: ctrls, super: g[2]})
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseProcCgroup maps each controller of a /proc/PID/cgroup to its path;
// "" is the v2 hierarchy's.
func parseProcCgroup(s string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out
}

// cgroupDir is the directory of cgroup path p in mount m (whose root may
// be a sub-cgroup, in a cgroup namespace or a bind).
func cgroupDir(m cgMount, p string) string {
	rel := p
	if m.root != "/" {
		rel = strings.TrimPrefix(p, m.root)
	}
	return filepath.Join(m.point, rel)
}

func readWords(p string) ([]string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

// prepare makes the build's directory in h, with the controllers enabled
// for its children (v2).
func (h *hierarchy) prepare() error {
	if h.v2 {
		if err := h.enableV2(); err != nil {
			return err
		}
	}
	h.build = filepath.Join(h.own, "builder-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(h.build, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return cgroupAccessError(h, err)
	}
	if h.v2 {
		return writeFile(filepath.Join(h.build, "cgroup.subtree_control"), plusControllers(h.ctrls))
	}
	if slices.Contains(h.ctrls, "cpuset") {
		return inheritCpuset(h.own, h.build)
	}
	return nil
}

// enableV2 makes the controllers usable below the builder's own v2
// cgroup: they must be delegated to it (in its cgroup.controllers), and
// enabled in its cgroup.subtree_control, which a cgroup with processes
// (other than the root) cannot have: the builder's own processes, and
// only they, are moved to a leaf of their own first.
func (h *hierarchy) enableV2() error {
	avail, err := readWords(filepath.Join(h.own, "cgroup.controllers"))
	if err != nil {
		return cgroupAccessError(h, err)
	}
	for _, c := range h.ctrls {
		if !slices.Contains(avail, c) {
			return fmt.Errorf("the cgroup v2 controller %q is not delegated to builder's cgroup %s (it has: %s): RUN resource limits need it; as an ordinary user run builder in a delegated cgroup, e.g. systemd-run --user --scope -p Delegate=yes builder build ...", c, h.own, strings.Join(avail, " "))
		}
	}
	enabled, err := readWords(filepath.Join(h.own, "cgroup.subtree_control"))
	if err != nil {
		return cgroupAccessError(h, err)
	}
	if !slices.ContainsFunc(h.ctrls, func(c string) bool { return !slices.Contains(enabled, c) }) {
		return nil
	}
	err = writeFile(filepath.Join(h.own, "cgroup.subtree_control"), plusControllers(h.ctrls))
	if !errors.Is(err, unix.EBUSY) {
		return cgroupAccessError(h, err)
	}
	if err := h.evacuate(); err != nil {
		return err
	}
	return cgroupAccessError(h, writeFile(filepath.Join(h.own, "cgroup.subtree_control"), plusControllers(h.ctrls)))
}

// evacuate moves the processes of the builder's own v2 cgroup to the leaf
// <own>/builder-<pid>.self, provided they are all builder processes (this
// binary: the builder and the parent that re-executed it).
func (h *hierarchy) evacuate() error {
	procs, err := readWords(filepath.Join(h.own, "cgroup.procs"))
	if err != nil {
		return cgroupAccessError(h, err)
	}
	self, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return err
	}
	for _, p := range procs {
		if exe, err := os.Readlink("/proc/" + p + "/exe"); err != nil || exe != self {
			return fmt.Errorf("builder's cgroup %s also holds process %s, so its controllers cannot be enabled for RUN's cgroups: run builder in a cgroup of its own (e.g. systemd-run --scope -p Delegate=yes builder build ...)", h.own, p)
		}
	}
	leaf := filepath.Join(h.own, "builder-"+strconv.Itoa(os.Getpid())+".self")
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return cgroupAccessError(h, err)
	}
	for _, p := range procs {
		if err := writeFile(filepath.Join(leaf, "cgroup.procs"), p); err != nil && !errors.Is(err, unix.ESRCH) {
			return cgroupAccessError(h, err)
		}
	}
	return nil
}

func cgroupAccessError(h *hierarchy, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EROFS) {
		kind := "v1"
		if h.v2 {
			kind = "v2"
		}
		return fmt.Errorf("RUN resource limits need a writable cgroup, and builder's cgroup %s (cgroup %s) is not (%w): as an ordinary user, run builder in a delegated cgroup v2 subtree (systemd-run --user --scope -p Delegate=yes builder build ...); cgroup v1 is never delegated", h.own, kind, err)
	}
	return err
}

func plusControllers(ctrls []string) string {
	var b []string
	for _, c := range ctrls {
		b = append(b, "+"+c)
	}
	return strings.Join(b, " ")
}

// inheritCpuset copies cpuset.cpus and cpuset.mems from parent to child:
// a v1 cpuset without them takes no task.
func inheritCpuset(parent, child string) error {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		b, err := os.ReadFile(filepath.Join(parent, f))
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(child, f), strings.TrimSpace(string(b))); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(p, s string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", s, p, err)
	}
	return nil
}

// limitFile is one value to write into a new step cgroup.
type limitFile struct{ name, value string }

// limitFiles are the files that set l in a hierarchy with ctrls, in
// order. optional names files whose absence (no swap accounting) is not an
// error when the user did not ask for that limit.
func limitFiles(v2 bool, ctrls []string, l Limits) (files []limitFile, optional map[string]bool) {
	optional = map[string]bool{}
	period := l.CPUPeriod
	if period == 0 {
		period = 100000
	}
	for _, c := range ctrls {
		switch {
		case c == "memory" && v2:
			files = append(files, limitFile{"memory.max", strconv.FormatInt(l.Memory, 10)})
			swap := l.Memory // docker: --memory-swap unset is twice --memory
			if l.MemorySwap == -1 {
				files = append(files, limitFile{"memory.swap.max", "max"})
			} else {
				if l.MemorySwap > 0 {
					swap = l.MemorySwap - l.Memory
				}
				files = append(files, limitFile{"memory.swap.max", strconv.FormatInt(swap, 10)})
			}
			optional["memory.swap.max"] = l.MemorySwap == 0
		case c == "memory":
			files = append(files, limitFile{"memory.limit_in_bytes", strconv.FormatInt(l.Memory, 10)})
			total := 2 * l.Memory
			if l.MemorySwap != 0 {
				total = l.MemorySwap
			}
			files = append(files, limitFile{"memory.memsw.limit_in_bytes", strconv.FormatInt(total, 10)})
			optional["memory.memsw.limit_in_bytes"] = l.MemorySwap == 0
		case c == "cpu" && v2:
			quota := "max"
			if l.CPUQuota > 0 {
				quota = strconv.FormatInt(l.CPUQuota, 10)
			}
			files = append(files, limitFile{"cpu.max", quota + " " + strconv.FormatInt(period, 10)})
		case c == "cpu":
			files = append(files, limitFile{"cpu.cfs_period_us", strconv.FormatInt(period, 10)})
			quota := int64(-1)
			if l.CPUQuota > 0 {
				quota = l.CPUQuota
			}
			files = append(files, limitFile{"cpu.cfs_quota_us", strconv.FormatInt(quota, 10)})
		case c == "cpuset":
			files = append(files, limitFile{"cpuset.cpus", l.CpusetCPUs})
		case c == "pids":
			limit := "max"
			if l.PidsLimit > 0 {
				limit = strconv.FormatInt(l.PidsLimit, 10)
			}
			files = append(files, limitFile{"pids.max", limit})
		}
	}
	return files, optional
}

// stepCgroup is the cgroup of one RUN step: a directory per hierarchy.
type stepCgroup struct {
	c    *Cgroups
	dirs []string
	hs   []*hierarchy
}

// newStep creates the cgroup of a step with the limits set.
func (c *Cgroups) newStep() (*stepCgroup, error) {
	n := c.seq.Add(1)
	s := &stepCgroup{c: c}
	for _, h := range c.hs {
		dir := filepath.Join(h.build, "run-"+strconv.FormatInt(n, 10))
		if err := os.Mkdir(dir, 0o755); err != nil {
			_ = s.remove()
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
		s.dirs, s.hs = append(s.dirs, dir), append(s.hs, h)
		if !h.v2 && slices.Contains(h.ctrls, "cpuset") {
			if err := inheritCpuset(h.build, dir); err != nil {
				_ = s.remove()
				return nil, err
			}
		}
		files, optional := limitFiles(h.v2, h.ctrls, c.limits)
		for _, f := range files {
			err := writeFile(filepath.Join(dir, f.name), f.value)
			if errors.Is(err, os.ErrNotExist) && optional[f.name] {
				continue
			}
			if err != nil {
				_ = s.remove()
				return nil, fmt.Errorf("set RUN limit: %w", err)
			}
		}
	}
	return s, nil
}

// attach moves pid (the sandbox init, before it starts the command) into
// the step's cgroup.
func (s *stepCgroup) attach(pid int) error {
	for _, d := range s.dirs {
		if err := writeFile(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("move the RUN into its cgroup: %w", err)
		}
	}
	return nil
}

// oomKilled reports whether the kernel's OOM killer killed a process of
// the step for its memory limit.
func (s *stepCgroup) oomKilled() bool {
	for i, d := range s.dirs {
		if !slices.Contains(s.hs[i].ctrls, "memory") {
			continue
		}
		name := "memory.oom_control"
		if s.hs[i].v2 {
			name = "memory.events"
		}
		b, err := os.ReadFile(filepath.Join(d, name))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" && f[1] != "0" {
				return true
			}
		}
	}
	return false
}

// remove kills what is left in the step's cgroup (v2's cgroup.kill) and
// removes it, waiting a little for dying processes.
func (s *stepCgroup) remove() error {
	var errs []error
	for i := len(s.dirs) - 1; i >= 0; i-- {
		if s.hs[i].v2 {
			_ = writeFile(filepath.Join(s.dirs[i], "cgroup.kill"), "1")
		}
		errs = append(errs, rmdirRetry(s.dirs[i], 5*time.Second))
	}
	return errors.Join(errs...)
}

// rmdirRetry removes an empty cgroup directory, retrying while it is busy
// (its last processes exiting).
func rmdirRetry(dir string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close removes the build's cgroup directories and lets the watchdog go.
// A nil Cgroups has nothing to close.
func (c *Cgroups) Close() error {
	if c == nil {
		return nil
	}
	var errs []error
	for _, h := range c.hs {
		if h.build != "" {
			errs = append(errs, removeTree(h.build, 5*time.Second))
		}
	}
	c.mu.Lock()
	if c.reaper != nil {
		c.reaper.Close()
		c.reaper = nil
		go func() { _ = c.reapC.Wait() }()
	}
	c.mu.Unlock()
	return errors.Join(errs...)
}

// removeTree removes a cgroup directory and its child cgroups, children
// first.
func removeTree(dir string, wait time.Duration) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name()), wait); err != nil {
				return err
			}
		}
	}
	return rmdirRetry(dir, wait)
}

// ReaperArg is the hidden argv[1] of the cgroup watchdog: a process the
// builder starts in a session of its own, which reads the directories to
// watch from stdin and, once stdin is closed (the builder closed it, or
// died however it died), removes them and exits.
const ReaperArg = "__builder-cgroup-reaper"

func (c *Cgroups) startReaper() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", ReaperArg)
	cmd.Stdin, cmd.Env = r, []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start the cgroup watchdog: %w", err)
	}
	c.reaper, c.reapC = w, cmd
	return nil
}

// watch tells the watchdog about a directory to remove if the builder dies.
func (c *Cgroups) watch(dir string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reaper != nil {
		_, _ = fmt.Fprintln(c.reaper, dir)
	}
}

// reaperMain is the watchdog's life (see ReaperArg).
func reaperMain(in io.Reader) int {
	var dirs []string
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		if d := sc.Text(); filepath.IsAbs(d) && strings.Contains(filepath.Base(d), "builder-") {
			dirs = append(dirs, d)
		}
	}
	code := 0
	for _, d := range dirs {
		// The builder's steps die with it (their inits' parent-death
		// signal); give them time to go.
		if err := removeTree(d, 30*time.Second); err != nil {
			code = 1
		}
	}
	return code
}

// OwnCgroupDirs are the builder's own cgroup directories of the
// hierarchies l's limits use: where the build's cgroups (builder-PID)
// are made. Tests look there for leftovers.
func OwnCgroupDirs(l Limits) ([]string, error) {
	hs, err := ownHierarchies(l)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, h := range hs {
		out = append(out, h.own)
	}
	return out, nil
}
