package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// waitDelay bounds how long Run waits for the output pipes after the init
// is gone; every writer lives in the sandbox's PID namespace and dies with it.
const waitDelay = 5 * time.Second

// Run runs spec.Args in a new sandbox and waits for it. A command that exits
// non-zero or is killed yields an *ExitError; a sandbox that cannot be set
// up yields another error. When ctx is cancelled the whole sandbox is
// killed and Run returns ctx.Err(). Run is safe for concurrent use.
func Run(ctx context.Context, spec Spec) error {
	if err := validate(spec); err != nil {
		return err
	}
	cfg, err := newConfig(spec)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(spec.TempDir, "builder-sandbox-")
	if err != nil {
		return fmt.Errorf("create sandbox directory: %w", err)
	}
	cfg.Dir = dir
	var cg *stepCgroup
	if spec.Limits.NeedsCgroup() {
		if cg, err = spec.Cgroups.newStep(); err != nil {
			_ = os.Remove(dir)
			return err
		}
	}
	res, runErr := start(ctx, cfg, cg, spec.Stdout, spec.Stderr)
	if cg != nil {
		if res != nil && cg.oomKilled() && (res.Code != 0 || res.Signal != "") {
			res.oom, res.memoryLimit = true, spec.Limits.Memory
		}
		if err := cg.remove(); err != nil && runErr == nil {
			runErr = err
		}
	}
	// The init mounted a tmpfs on dir in its own mount namespace, which
	// died with it: on the host dir is still empty. Never remove recursively.
	if err := os.Remove(dir); err != nil && runErr == nil {
		runErr = fmt.Errorf("remove sandbox directory: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if runErr != nil {
		return runErr
	}
	return res.err()
}

func newConfig(spec Spec) (*config, error) {
	cfg := &config{
		Mounts: spec.Mounts, Args: spec.Args, Env: spec.Env, Cwd: spec.Cwd,
		UID: spec.UID, GID: spec.GID, Groups: spec.AdditionalGids,
		Network: spec.Network, Insecure: spec.Insecure, Hostname: spec.Hostname,
		Hosts: spec.Hosts, ResolvConf: spec.ResolvConf,
		Binds: spec.Binds, Tmpfs: spec.Tmpfs, Files: spec.Files,
		Isolation: spec.Isolation,
		ShmSize:   spec.Limits.ShmSize, Ulimits: spec.Limits.Ulimits,
	}
	if cfg.Env == nil {
		cfg.Env = []string{}
	}
	if cfg.Cwd == "" {
		cfg.Cwd = "/"
	}
	if cfg.Network == "" {
		cfg.Network = NetworkNone
	}
	if cfg.Hostname == "" {
		cfg.Hostname = DefaultHostname
	}
	if cfg.Hosts == nil {
		cfg.Hosts = defaultHosts(cfg.Hostname)
	}
	for _, h := range spec.ExtraHosts {
		f := strings.Fields(h)
		cfg.Hosts = fmt.Appendf(cfg.Hosts, "%s\t%s\n", f[1], f[0])
	}
	if cfg.ResolvConf == nil {
		b, err := os.ReadFile("/etc/resolv.conf")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read host resolv.conf: %w", err)
		}
		cfg.ResolvConf = append([]byte{}, b...)
		if cfg.Network == NetworkPrivate {
			cfg.ResolvConf = privateResolvConf(b)
		}
	}
	return cfg, nil
}

func (r *result) err() error {
	switch {
	case r.Error != "":
		return fmt.Errorf("sandbox: %s", r.Error)
	case r.Code != 0 || r.Signal != "":
		return &ExitError{Code: r.Code, Signal: r.Signal, OOMKilled: r.oom, MemoryLimit: r.memoryLimit}
	}
	return nil
}

// start runs the init with cfg (in the step cgroup cg, if any) and
// returns what it reported.
func start(ctx context.Context, cfg *config, cg *stepCgroup, stdout, stderr io.Writer) (*result, error) {
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create spec pipe: %w", err)
	}
	defer specW.Close()
	resR, resW, err := os.Pipe()
	if err != nil {
		specR.Close()
		return nil, fmt.Errorf("create result pipe: %w", err)
	}
	defer resR.Close()
	cmd := initCommand(ctx, cfg, specR, resW, stdout, stderr)

	// Pdeathsig fires when the thread that started the child exits: keep
	// this goroutine on its thread until the child is reaped.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	err = cmd.Start()
	specR.Close()
	resW.Close()
	if err != nil {
		return nil, fmt.Errorf("start sandbox init: %w", err)
	}
	if cg != nil {
		// The init waits for its spec: the command starts in the cgroup.
		if err := cg.attach(cmd.Process.Pid); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return nil, err
		}
	}
	reported := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(resR)
		reported <- b
	}()
	if cfg.Network == NetworkPrivate {
		// The init waits for its spec: connect its network namespace
		// first, so the command starts with the network up.
		sl, err := startSlirp(ctx, cmd.Process.Pid)
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return nil, err
		}
		defer sl.stop()
	}
	// A write error means the init died early; its exit status says why.
	_ = json.NewEncoder(specW).Encode(cfg)
	specW.Close()
	waitErr := cmd.Wait()
	return decodeResult(<-reported, waitErr)
}

func initCommand(ctx context.Context, cfg *config, specR, resW *os.File, stdout, stderr io.Writer) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "/proc/self/exe", InitArg)
	cmd.Env = []string{}
	// Wrapping hides any *os.File from exec, so the sandbox only ever gets
	// pipes, never an fd of a host file.
	cmd.Stdout = writerOnly{orDiscard(stdout)}
	cmd.Stderr = writerOnly{orDiscard(stderr)}
	cmd.ExtraFiles = []*os.File{specR, resW}
	cmd.WaitDelay = waitDelay
	flags := unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC
	if cfg.Network != NetworkHost {
		flags |= unix.CLONE_NEWNET
	}
	if cfg.Isolation == IsolationChroot {
		flags = 0 // nothing new is allowed: see chroot_linux.go
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: uintptr(flags),
		Pdeathsig:  syscall.SIGKILL,
		// A new session has no controlling terminal: /dev/tty in the
		// sandbox cannot reach the user's terminal.
		Setsid: true,
	}
	return cmd
}

func decodeResult(b []byte, waitErr error) (*result, error) {
	var res result
	if len(b) > 0 {
		if err := json.Unmarshal(b, &res); err != nil {
			return nil, fmt.Errorf("decode sandbox result %q: %w", b, err)
		}
		return &res, nil
	}
	// The init died without reporting.
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return nil, fmt.Errorf("sandbox init: %w", &ExitError{Code: 128 + int(ws.Signal()), Signal: unix.SignalName(ws.Signal())})
		}
	}
	if waitErr == nil {
		waitErr = errors.New("exited without a result")
	}
	return nil, fmt.Errorf("sandbox init: %w", waitErr)
}

type writerOnly struct{ io.Writer }

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
