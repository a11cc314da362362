package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/internal/userns"
	"golang.org/x/sys/unix"
)

// Markers of a re-executed child, in its environment (removed at once).
const (
	// mountNSEnv marks the child that already runs in its own mount
	// namespace (isolation "namespaces").
	mountNSEnv = "_BUILDER_MOUNT_NS"
	// usernsEnv is "wait" in the first stage of a rootless child (in a
	// new user namespace, waiting for its id maps) and "1" once it runs
	// as root of that namespace.
	usernsEnv = "_BUILDER_USERNS"
	// usernsLimitEnv carries the plan's limit (a single-id map) to the
	// child, for the build's notice.
	usernsLimitEnv = "_BUILDER_USERNS_LIMIT"
	// usernsSyncFD is the pipe on which the first stage waits.
	usernsSyncFD = 3
)

// isolation is how this process isolates RUN steps, decided before the
// command runs (the decision may re-execute the process in new namespaces).
type isolation struct {
	mode string // sandbox.Isolation*
	// notice is said once by a build: which isolation is in effect when
	// it is not the root default, and what it costs.
	notice string
}

// parseIsolation checks an --isolation value: auto (or docker's
// "default"), namespaces, rootless or chroot.
func parseIsolation(v string) (string, error) {
	switch v {
	case "", "default", "auto":
		return "auto", nil
	case sandbox.IsolationNamespaces, sandbox.IsolationRootless, sandbox.IsolationChroot:
		return v, nil
	}
	return "", fmt.Errorf("--isolation %q: want auto, namespaces, rootless or chroot", v)
}

// isolationArg finds --isolation in a subcommand's arguments before they
// are parsed (the choice is made before the command runs; the last one
// counts, as for pflag); the flag itself is parsed and checked again with
// the others.
func isolationArg(args []string) string {
	v := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if val, ok := strings.CutPrefix(a, "--isolation="); ok {
			v = val
		} else if a == "--isolation" && i+1 < len(args) {
			v = args[i+1]
			i++
		}
	}
	return v
}

// usernsStage1 is the first stage of a rootless child: it waits until
// the parent has written its id maps, then executes itself again, now as
// root of the user namespace with its full capabilities (capabilities are
// computed at exec, when the uid is mapped). It returns only when the
// process is not such a child.
func usernsStage1() {
	if os.Getenv(usernsEnv) != "wait" {
		return
	}
	sync := os.NewFile(usernsSyncFD, "userns-sync")
	b := make([]byte, 1)
	if n, _ := sync.Read(b); n != 1 || b[0] != 'g' {
		os.Exit(1) // the parent failed and says why
	}
	unix.CloseOnExec(usernsSyncFD)
	err := syscall.Exec("/proc/self/exe", os.Args, withEnv(os.Environ(), usernsEnv+"=1"))
	fmt.Fprintf(os.Stderr, "ERROR: re-execute in the user namespace: %v\n", err)
	os.Exit(1)
}

// enterIsolation gives the rest of the process the isolation requested
// (auto, namespaces, rootless or chroot). A root process re-executes
// itself in a private mount namespace, so every mount the build makes
// dies with it, even on SIGKILL; an ordinary user's process re-executes
// itself in a new user and mount namespace where it is root over the ids
// mapped to it (rootless); where neither is allowed (an unprivileged
// container: seccomp or the kernel refuse new namespaces) RUN steps are
// only chrooted. The parent of a re-executed child returns reexeced=true
// with the child's exit code. mounts says whether the command mounts
// anything (build); commands that do not still enter a rootless user's
// namespace, where the store's files are owned by the mapped ids.
func enterIsolation(flag string, mounts bool) (iso isolation, code int, reexeced bool) {
	requested, err := parseIsolation(flag)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ERROR: %v\n", err)
		return iso, 1, true
	}
	if os.Getenv(mountNSEnv) == "1" {
		os.Unsetenv(mountNSEnv) //nolint:errcheck // only this process's own marker
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			fmt.Fprintf(os.Stderr, "ERROR: make mounts private: %v\n", err)
			return iso, 1, true
		}
		return isolation{mode: sandbox.IsolationNamespaces}, 0, false
	}
	if os.Getenv(usernsEnv) == "1" {
		return insideUserNS(requested)
	}
	root := os.Geteuid() == 0
	switch {
	case root && requested == sandbox.IsolationChroot:
		return chrootIsolation(""), 0, false
	case root && requested == sandbox.IsolationRootless:
		fmt.Fprintf(os.Stderr, "ERROR: --isolation rootless is for an ordinary user; root builds with namespaces\n")
		return iso, 1, true
	case root && !mounts:
		return isolation{mode: sandbox.IsolationNamespaces}, 0, false
	case root:
		code, err := reexec(unix.CLONE_NEWNS, []string{mountNSEnv + "=1"}, nil)
		if err == nil || requested == sandbox.IsolationNamespaces || !errors.Is(err, unix.EPERM) {
			return iso, reexecFailed(code, err, "start the build in a private mount namespace"), true
		}
		return chrootIsolation(fmt.Sprintf("new namespaces are not allowed here (%v)", errnoOf(err))), 0, false
	case requested == sandbox.IsolationNamespaces:
		fmt.Fprintf(os.Stderr, "ERROR: --isolation namespaces needs root; an ordinary user builds with --isolation rootless (or auto)\n")
		return iso, 1, true
	}
	plan, err := rootlessPlan()
	if err != nil {
		fmt.Fprintf(os.Stderr, "ERROR: rootless: %v\n", err)
		return iso, 1, true
	}
	env := []string{usernsEnv + "=wait", usernsLimitEnv + "=" + plan.Limit}
	if _, ok := os.LookupEnv("HOME"); !ok {
		// The child is root of its namespace: the user's default store
		// (defaultRoot) is found by the home the user has here.
		if u, err := user.Current(); err == nil && u.HomeDir != "" {
			env = append(env, "HOME="+u.HomeDir)
		}
	}
	code, err = reexec(unix.CLONE_NEWUSER|unix.CLONE_NEWNS, env, func(pid int) error { return plan.Write(pid, userns.Files{}) })
	if err == nil || requested == sandbox.IsolationRootless || !errors.Is(err, unix.EPERM) {
		return iso, reexecFailed(code, err, "start the build in a user namespace"), true
	}
	if requested == sandbox.IsolationChroot {
		return chrootIsolation(""), 0, false
	}
	return chrootIsolation(fmt.Sprintf("user namespaces are not allowed here (%v)", errnoOf(err))), 0, false
}

// insideUserNS finishes the second stage of a rootless child: root of a
// user namespace with its own mount namespace.
func insideUserNS(requested string) (isolation, int, bool) {
	limit := os.Getenv(usernsLimitEnv)
	os.Unsetenv(usernsEnv)      //nolint:errcheck // only this process's own marker
	os.Unsetenv(usernsLimitEnv) //nolint:errcheck
	// The exec into this stage gained capabilities, which resets the
	// parent-death signal.
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	if os.Getppid() == 1 {
		return isolation{}, 1, true
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fmt.Fprintf(os.Stderr, "ERROR: make mounts private in the user namespace: %v%s\n", err, usernsDeniedHint(err, apparmorUsernsSysctl))
		return isolation{}, 1, true
	}
	if requested == sandbox.IsolationChroot {
		return chrootIsolation(""), 0, false
	}
	if err := sandbox.CheckMounts(); err != nil {
		if requested == sandbox.IsolationRootless {
			fmt.Fprintf(os.Stderr, "ERROR: --isolation rootless: %v\n", err)
			return isolation{}, 1, true
		}
		return chrootIsolation(fmt.Sprintf("mounts are not allowed in the user namespace (%v)", err)), 0, false
	}
	note := "isolation: rootless (RUN in a user namespace"
	if limit != "" {
		note += "; single-id mapping: " + limit
	}
	return isolation{mode: sandbox.IsolationRootless, notice: note + ")"}, 0, false
}

// apparmorUsernsSysctl is the switch of Ubuntu's AppArmor (23.10 and
// later, so GitHub's ubuntu-24.04 runners) that leaves a process of an
// unconfined program no capability in the user namespaces it makes.
const apparmorUsernsSysctl = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"

// usernsDeniedHint explains err, a mount refused to root of the user
// namespace, when the host's AppArmor is what refused it (sysctl, its
// switch, reads 1): how to let builder have its namespace.
func usernsDeniedHint(err error, sysctl string) string {
	if !errors.Is(err, unix.EPERM) {
		return ""
	}
	b, rerr := os.ReadFile(sysctl)
	if rerr != nil || strings.TrimSpace(string(b)) != "1" {
		return ""
	}
	return " (this host's AppArmor gives unprivileged user namespaces no capabilities: " +
		"kernel.apparmor_restrict_unprivileged_userns=1; allow builder with an AppArmor profile " +
		"granting it userns, as for rootless BuildKit or Podman, or set the sysctl to 0, or build as root)"
}

// chrootIsolation is the isolation of last resort, announced with why.
// RUN steps see the builder's processes, so the builder makes itself
// non-dumpable: a RUN running as the same uid cannot ptrace it or read its
// memory.
func chrootIsolation(why string) isolation {
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	note := "isolation: chroot (RUN steps share the network, process and IPC namespaces of the builder; see README \"Rootless and CI containers\")"
	if why != "" {
		note = "isolation: chroot, as " + why + " (RUN steps share the network, process and IPC namespaces of the builder; see README \"Rootless and CI containers\")"
	}
	return isolation{mode: sandbox.IsolationChroot, notice: note}
}

// rootlessPlan plans the id maps of the invoking user.
func rootlessPlan() (userns.Plan, error) {
	uid, gid := os.Getuid(), os.Getgid()
	name := ""
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		name = u.Username
	}
	return userns.NewPlan(name, uint32(uid), uint32(gid), userns.Files{})
}

func reexecFailed(code int, err error, what string) int {
	if err != nil {
		fmt.Fprintf(os.Stderr, "ERROR: %s: %v\n", what, err)
		return 1
	}
	return code
}

// reexec runs this binary again with the same arguments in new namespaces
// (cloneflags), env added to the environment, and waits for it,
// forwarding signals. setup, if set, runs once the child exists (it then
// waits on usernsSyncFD until setup succeeded). A child that cannot be
// started returns the error (EPERM where namespaces are not allowed).
func reexec(cloneflags uintptr, env []string, setup func(pid int) error) (int, error) {
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = withEnv(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: cloneflags, Pdeathsig: syscall.SIGKILL}
	var syncW *os.File
	if setup != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return 0, err
		}
		defer r.Close()
		defer w.Close()
		cmd.ExtraFiles = []*os.File{r}
		syncW = w
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	if setup != nil {
		cmd.ExtraFiles[0].Close()
		if err := setup(cmd.Process.Pid); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return 1, fmt.Errorf("map ids: %w", err)
		}
		if _, err := syncW.Write([]byte{'g'}); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return 1, err
		}
		syncW.Close()
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			return 128 + int(st.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return 0, err
}

// withEnv returns env with the variables set (KEY=VALUE), replacing any
// earlier value: the first occurrence of a key is the one a Go program sees.
func withEnv(env []string, set ...string) []string {
	out := make([]string, 0, len(env)+len(set))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.ContainsFunc(set, func(s string) bool { return strings.HasPrefix(s, k+"=") }) {
			out = append(out, kv)
		}
	}
	return append(out, set...)
}

// errnoOf is the system error inside err (EPERM of a refused clone), or
// err itself.
func errnoOf(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}
