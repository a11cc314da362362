package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/builder-dev/builder/internal/seccomp"
	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// errNotFound is the lookup failure of Args[0]; like a shell, the init then
// exits 127.
var errNotFound = errors.New("executable file not found in $PATH")

// supervise starts the command, forwards SIGINT/SIGTERM to it, reaps every
// child until it exits, then kills and reaps whatever is left in the PID
// namespace.
func supervise(cfg *config) result {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM)
	defer signal.Stop(sigs)

	p, err := startCommand(cfg)
	if err != nil {
		code := 126
		if errors.Is(err, errNotFound) || errors.Is(err, unix.ENOENT) {
			code = 127
		}
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		fmt.Fprintf(os.Stderr, "sandbox: exec %s: %v\n", cfg.Args[0], err)
		return result{Code: code}
	}
	done := make(chan struct{})
	defer close(done)
	go forward(sigs, done, p.Pid)
	ws, err := waitFor(p.Pid)
	if cfg.Isolation == IsolationChroot {
		killDescendants()
	} else {
		killAll()
	}
	if err != nil {
		return result{Error: err.Error()}
	}
	return statusResult(ws)
}

func forward(sigs <-chan os.Signal, done <-chan struct{}, pid int) {
	for {
		select {
		case s := <-sigs:
			_ = unix.Kill(pid, s.(syscall.Signal))
		case <-done:
			return
		}
	}
}

// waitFor reaps children, orphans included, until pid exits.
func waitFor(pid int) (unix.WaitStatus, error) {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, fmt.Errorf("wait for command: %w", err)
		}
		if got == pid {
			return ws, nil
		}
	}
}

// killAll kills every other process of the PID namespace and reaps them.
func killAll() {
	_ = unix.Kill(-1, unix.SIGKILL)
	for {
		_, err := unix.Wait4(-1, nil, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
	}
}

func statusResult(ws unix.WaitStatus) result {
	if ws.Signaled() {
		return result{Code: 128 + int(ws.Signal()), Signal: unix.SignalName(ws.Signal())}
	}
	return result{Code: ws.ExitStatus()}
}

// startCommand starts Args with Docker's default capabilities (every
// capability of the init for Insecure), as
// UID/GID/Groups, in Cwd, with stdin /dev/null and the init's stdout and
// stderr. Capabilities are per thread and the child inherits those of the
// thread that forks it: the start happens on a locked thread that drops
// them first and is never unlocked, so it exits with its goroutine.
func startCommand(cfg *config) (*os.Process, error) {
	root := "/"
	var drop []int
	if cfg.Isolation == IsolationChroot {
		// The init stays outside the root; the command is chrooted, and
		// without CAP_SYS_CHROOT it cannot chroot its way back out.
		root, _ = chrootRoot(cfg.Mounts)
		drop = []int{unix.CAP_SYS_CHROOT}
		if err := mkdirIn(root, cfg.Cwd); err != nil {
			return nil, err
		}
	}
	path, err := lookPath(root, cfg.Args[0], cfg.Env, cfg.Cwd)
	if err != nil {
		return nil, err
	}
	if err := setUlimits(cfg.Ulimits); err != nil {
		return nil, err
	}
	stdin, err := os.Open("/dev/null")
	if err != nil {
		return nil, fmt.Errorf("open /dev/null: %w", err)
	}
	defer stdin.Close()
	env := cfg.Env
	if env == nil {
		env = []string{} // nil would mean the init's own environment
	}
	attr := &os.ProcAttr{
		Dir:   cfg.Cwd,
		Env:   env,
		Files: []*os.File{stdin, os.Stdout, os.Stderr},
		Sys: &syscall.SysProcAttr{Credential: &syscall.Credential{
			Uid: cfg.UID, Gid: cfg.GID, Groups: cfg.Groups, NoSetGroups: cfg.noSetgroups,
		}},
	}
	if root != "/" {
		attr.Sys.Chroot = root // before the chdir to Dir, inside it
	}
	type started struct {
		p   *os.Process
		err error
	}
	ch := make(chan started, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		var err error
		if cfg.cgroupNS {
			// Rooted, as the init's, at the cgroup the init is in.
			if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
				ch <- started{err: fmt.Errorf("new cgroup namespace: %w", err)}
				return
			}
		}
		if cfg.Insecure {
			attr.Sys.AmbientCaps, err = allCapabilities()
		} else if err = loadSeccomp(); err == nil {
			err = dropCapabilities(drop...)
		}
		if err != nil {
			ch <- started{err: err}
			return
		}
		p, err := os.StartProcess(path, cfg.Args, attr)
		ch <- started{p, err}
	}()
	s := <-ch
	return s.p, s.err
}

// loadSeccomp gives the calling (locked) thread, and so the command it
// starts, Docker's default seccomp profile for Docker's default
// capabilities, as BuildKit gives every RUN but --security=insecure ones.
// It runs before the thread drops its capabilities: loading a filter
// takes CAP_SYS_ADMIN, or else no_new_privs, which would keep setuid
// programs in the RUN from gaining privileges (BuildKit does not set it).
// Where the builder has no CAP_SYS_ADMIN (isolation chroot in an
// unprivileged container), the thread sets no_new_privs and loads the
// filter then: a filter matters more there than setuid programs. The
// profile allows chroot (CAP_SYS_CHROOT is in the set): isolation
// chroot's command is chrooted by the child before its exec, and loses
// the capability itself. On a host architecture without system call
// tables here (neither amd64 nor arm64) a RUN has no filter.
func loadSeccomp() error {
	if !seccomp.Supported() {
		return nil
	}
	prog, err := seccomp.DefaultProgram(defaultCapNames())
	if err != nil {
		return err
	}
	err = seccomp.Install(prog)
	if errors.Is(err, unix.EACCES) {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs for the seccomp filter: %w", err)
		}
		err = seccomp.Install(prog)
	}
	return err
}

// defaultCapNames names defaultCaps.
func defaultCapNames() []string {
	names := make([]string, len(defaultCaps))
	for i, c := range defaultCaps {
		names[i] = c.name
	}
	return names
}

// lookPath finds name in the PATH of env (DefaultPath if unset), relative
// entries being relative to cwd, in the tree at root (symlinks resolved
// inside it). A name with a slash is used as is. The path returned is the
// one inside root.
func lookPath(root, name string, env []string, cwd string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	search := DefaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			search = v
		}
	}
	for _, dir := range filepath.SplitList(search) {
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir)
		}
		p := filepath.Join(dir, name)
		host, err := securejoin.SecureJoin(root, p)
		if err != nil {
			continue
		}
		if fi, err := os.Stat(host); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errNotFound
}

// mkdirIn creates the directory dir (absolute, inside root) and its
// parents, resolving symlinks inside root.
func mkdirIn(root, dir string) error {
	p, err := securejoin.SecureJoin(root, dir)
	if err != nil {
		return fmt.Errorf("resolve working directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		return fmt.Errorf("create working directory: %w", err)
	}
	return nil
}

// rlimits maps docker's --ulimit names to resources.
var rlimits = map[string]int{
	"core": unix.RLIMIT_CORE, "cpu": unix.RLIMIT_CPU, "data": unix.RLIMIT_DATA,
	"fsize": unix.RLIMIT_FSIZE, "locks": unix.RLIMIT_LOCKS, "memlock": unix.RLIMIT_MEMLOCK,
	"msgqueue": unix.RLIMIT_MSGQUEUE, "nice": unix.RLIMIT_NICE, "nofile": unix.RLIMIT_NOFILE,
	"nproc": unix.RLIMIT_NPROC, "rss": unix.RLIMIT_RSS, "rtprio": unix.RLIMIT_RTPRIO,
	"rttime": unix.RLIMIT_RTTIME, "sigpending": unix.RLIMIT_SIGPENDING, "stack": unix.RLIMIT_STACK,
}

// setUlimits sets the init's resource limits, which the command inherits.
func setUlimits(ls []Ulimit) error {
	for _, l := range ls {
		r, ok := rlimits[l.Name]
		if !ok {
			return fmt.Errorf("unknown ulimit %q", l.Name)
		}
		lim := unix.Rlimit{Cur: rlimitValue(l.Soft), Max: rlimitValue(l.Hard)}
		if err := unix.Prlimit(0, r, &lim, nil); err != nil {
			return fmt.Errorf("set ulimit %s=%d:%d: %w", l.Name, l.Soft, l.Hard, err)
		}
	}
	return nil
}

func rlimitValue(v int64) uint64 {
	if v < 0 {
		return unix.RLIM_INFINITY
	}
	return uint64(v)
}
