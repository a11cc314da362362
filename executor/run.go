package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/internal/user"
	"github.com/builder-dev/builder/planner"
	"github.com/builder-dev/builder/snapshot"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/util/system"
)

// dispatchRun runs a RUN step in a sandbox on a snapshot of the stage.
func (b *build) dispatchRun(ctx context.Context, sc *stepCtx, c *instructions.RunCommand) error {
	s := sc.s
	argv, err := runArgv(&s.img.Config.Shell, c)
	if err != nil {
		return err
	}
	script, err := heredocScript(c)
	if err != nil {
		return err
	}
	network, err := b.runNetwork(c)
	if err != nil {
		return err
	}
	insecure, err := b.runInsecure(c)
	if err != nil {
		return err
	}
	wd := s.img.Config.WorkingDir
	if wd == "" {
		wd = "/"
	}
	mounts, err := parseRunMounts(instructions.GetMounts(c), wd)
	if err != nil {
		return err
	}
	rs := &runSpec{argv: argv, env: runEnv(sc.step), wd: wd, network: network,
		insecure: insecure, mounts: mounts, script: script}
	if err := b.keyMountSources(ctx, sc.step, mounts); err != nil {
		return err
	}
	return b.runKeyed(ctx, sc, rs)
}

// runSpec is what a RUN executes: the command, its environment and
// working directory, its network mode and privileges, and its mounts.
type runSpec struct {
	argv, env []string
	wd        string
	network   string
	insecure  bool // --security=insecure, granted
	mounts    []*runMount
	// script is the file of a heredoc RUN with a shebang, or nil.
	script *sandbox.File
}

// runKeyed prepares a RUN: its key inputs and what it runs on a miss.
// A RUN with mounts from a stage, an image or scratch is keyed by their
// identity; on a miss they are built and mounted, and what its bind
// mounts bind gives the content key.
func (b *build) runKeyed(ctx context.Context, sc *stepCtx, rs *runSpec) error {
	userSpec := sc.s.img.Config.User
	step := sc.step
	out := b.stepOutput(sc)
	ch := change{
		inputs:    b.runInputs(step, userSpec, rs),
		createdBy: "RUN " + runCommandString(rs.argv, step) + " # buildkit",
		desc:      "mount / from exec " + strings.Join(rs.argv, " "),
	}
	ch.apply = func(ctx context.Context, root string) (err error) {
		sm, err := b.prepareMounts(ctx, rs.mounts)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := sm.close(); cerr != nil && err == nil {
				err = fmt.Errorf("release RUN mounts: %w", cerr)
			}
		}()
		if rs.script != nil {
			sm.files = append(sm.files, *rs.script)
		}
		return b.runIn(ctx, root, userSpec, rs, out, sm)
	}
	var closers []func() error
	for _, rm := range rs.mounts {
		if rm.plan != nil {
			closers = append(closers, rm.plan.Close)
		}
		if rm.deferred {
			ch.reads = append(ch.reads, stageReads(rm.source)...)
		}
	}
	ch.close = func() error {
		var errs []error
		for _, c := range closers {
			errs = append(errs, c())
		}
		return errors.Join(errs...)
	}
	if slices.ContainsFunc(rs.mounts, func(rm *runMount) bool { return rm.deferred }) {
		ch.content = func(ctx context.Context, fn func(change) error) error {
			return b.withMountSources(ctx, rs.mounts, func() error {
				return fn(change{inputs: b.runInputs(step, userSpec, rs), createdBy: ch.createdBy, apply: ch.apply})
			})
		}
	}
	return b.prepare(sc, ch)
}

// runInputs are a RUN's key inputs: its command, user, workdir, network,
// environment, mounts (a bind mount from a stage, an image or scratch by
// the source's identity until its files are selected, then by them).
func (b *build) runInputs(step *planner.Step, userSpec string, rs *runSpec) cache.Inputs {
	in := cache.Inputs{Op: "RUN", Fields: []cache.Field{
		{Name: "argv", Value: strings.Join(quoteAll(rs.argv), " ")},
		{Name: "user", Value: userSpec},
		{Name: "workdir", Value: rs.wd},
		{Name: "network", Value: rs.network},
	}}
	if h := b.e.opts.Hostname; h != "" {
		in.Fields = append(in.Fields, cache.Field{Name: "hostname", Value: h})
	}
	for _, h := range b.e.opts.ExtraHosts {
		in.Fields = append(in.Fields, cache.Field{Name: "add-host", Value: h})
	}
	if rs.insecure {
		in.Fields = append(in.Fields, cache.Field{Name: "security", Value: string(instructions.SecurityInsecure)})
	}
	for _, e := range rs.env {
		k, v, _ := strings.Cut(e, "=")
		if planner.IsProxyArg(k) && !isEnvKey(step.Env, k) {
			continue
		}
		name := "env." + k
		if !isEnvKey(step.Env, k) {
			name = "arg." + k
		}
		in.Fields = append(in.Fields, cache.Field{Name: name, Value: v})
	}
	for i, m := range rs.mounts {
		fields, files := m.keyInputs(i)
		in.Fields = append(append(in.Fields, m.keyField()), fields...)
		in.Files = append(in.Files, files...)
		if m.deferred && m.Type == instructions.MountTypeBind && m.plan == nil {
			in.Fields = append(in.Fields, cache.Field{Name: fmt.Sprintf("mount.%d.from", i), Value: m.FromKey})
		}
	}
	if rs.script != nil {
		in.Fields = append(in.Fields, cache.Field{Name: "heredoc " + rs.script.Target, Value: string(rs.script.Data)})
	}
	return in
}

// runIn resolves the user inside root and runs the RUN there with the
// step's mounts.
func (b *build) runIn(ctx context.Context, root, userSpec string, rs *runSpec, out io.Writer, sm *stepMounts) error {
	id, err := user.Resolve(root, userSpec)
	if err != nil {
		return err
	}
	env := rs.env
	if _, ok := getEnv(env, "HOME"); !ok {
		home := id.Home
		if home == "" {
			home = "/"
		}
		env = append(slices.Clip(env), "HOME="+home)
	}
	if sock, ok := sshAuthSock(rs.mounts); ok && !isEnvKey(env, "SSH_AUTH_SOCK") {
		env = append(slices.Clip(env), "SSH_AUTH_SOCK="+sock)
	}
	for _, kv := range sm.env { // secrets as env vars win over ENV
		k, _, _ := strings.Cut(kv, "=")
		env = slices.DeleteFunc(slices.Clone(env), func(e string) bool { return strings.HasPrefix(e, k+"=") })
		env = append(env, kv)
	}
	if f, ok := out.(interface{ Flush() }); ok {
		defer f.Flush()
	}
	tail := &tailBuffer{max: 20}
	w := io.MultiWriter(out, tail)
	err = b.e.opts.Sandbox.Run(ctx, sandbox.Spec{
		Mounts:         []snapshot.Mount{{Type: "bind", Source: root, Options: []string{"rbind", "rw"}}},
		Args:           rs.argv,
		Env:            env,
		Cwd:            rs.wd,
		UID:            id.UID,
		GID:            id.GID,
		AdditionalGids: runGroups(id.GID, id.AdditionalGids),
		Network:        rs.network,
		Insecure:       rs.insecure,
		Hostname:       b.e.opts.Hostname,
		ExtraHosts:     b.e.opts.ExtraHosts,
		Stdout:         w,
		Stderr:         w,
		TempDir:        b.e.opts.TempDir,
		Binds:          sm.binds,
		Tmpfs:          sm.tmpfs,
		Files:          sm.files,
		Isolation:      b.e.opts.Isolation,
		Limits:         b.e.opts.Limits,
		Cgroups:        b.e.opts.Cgroups,
	})
	var exit *sandbox.ExitError
	if errors.As(err, &exit) {
		re := &RunError{Argv: rs.argv, Code: exit.Code, Signal: exit.Signal, Tail: tail.lines()}
		if exit.OOMKilled {
			re.OOM = exit.Error()
		}
		return re
	}
	return err
}

// runGroups is the supplementary group list of a RUN: as Docker does, the
// primary group first, then the groups /etc/group lists the user in.
func runGroups(gid uint32, extra []uint32) []uint32 {
	out := []uint32{gid}
	for _, g := range extra {
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

// runNetwork returns the network mode of a RUN step: the build's default
// (Options.Network) unless the step names one. Host networking asked for
// by the step needs the network.host entitlement, as in BuildKit.
func (b *build) runNetwork(c *instructions.RunCommand) (string, error) {
	mode := instructions.GetNetwork(c)
	switch mode {
	case "", "default":
		return b.e.opts.Network, nil
	case "none":
		return sandbox.NetworkNone, nil
	case "host":
		if !b.e.opts.AllowNetworkHost {
			return "", fmt.Errorf("%w: RUN --network=host requires 'builder build --allow network.host'", ErrNeedsEntitlement)
		}
		return sandbox.NetworkHost, nil
	}
	return "", fmt.Errorf("unsupported network mode %q", mode)
}

// runInsecure reports whether a RUN runs with --security=insecure, which
// needs the security.insecure entitlement (BuildKit's error without it).
func (b *build) runInsecure(c *instructions.RunCommand) (bool, error) {
	switch sec := instructions.GetSecurity(c); sec {
	case "", instructions.SecuritySandbox:
		return false, nil
	case instructions.SecurityInsecure:
		if !b.e.opts.AllowInsecure {
			return false, fmt.Errorf("%w: security.insecure is not allowed: RUN --security=insecure requires 'builder build --allow security.insecure'", ErrNeedsEntitlement)
		}
		return true, nil
	default:
		return false, fmt.Errorf("unsupported security mode %q", sec)
	}
}

// runArgv returns the argv of a RUN, following BuildKit for heredocs.
func runArgv(shell *[]string, c *instructions.RunCommand) ([]string, error) {
	args := c.CmdLine
	if len(c.Files) > 0 {
		if len(args) != 1 || !c.PrependShell {
			return nil, fmt.Errorf("invalid heredoc RUN command: %v", args)
		}
		if h := parser.MustParseHeredoc(args[0]); h != nil {
			data := heredocBody(c.Files[0])
			if f, err := heredocScript(c); err != nil {
				return nil, err
			} else if f != nil {
				args = []string{f.Target}
			} else {
				args = []string{data}
			}
		} else {
			var sb strings.Builder
			sb.WriteString(args[0])
			for _, f := range c.Files {
				sb.WriteString("\n" + f.Data + f.Name)
			}
			args = []string{sb.String()}
		}
	}
	if !c.PrependShell {
		return append([]string(nil), args...), nil
	}
	return append(shellOf(*shell, ""), strings.Join(args, " ")), nil
}

// heredocBody is the content of a RUN heredoc, its leading tabs removed
// for the <<- form.
func heredocBody(f instructions.ShellInlineFile) string {
	if f.Chomp {
		return parser.ChompHeredocContent(f.Data)
	}
	return f.Data
}

// heredocPipes is where BuildKit mounts the script of a heredoc RUN with
// a shebang (read-only, mode 0755, owned by root).
const heredocPipes = "/dev/pipes"

// heredocScript returns the file a RUN runs when it is a single heredoc
// whose (chomped) body starts with "#!": BuildKit writes the body to
// /dev/pipes/<name> and runs that path with the shell, so the kernel
// picks the interpreter from the shebang. Nil for any other RUN.
func heredocScript(c *instructions.RunCommand) (*sandbox.File, error) {
	if len(c.Files) == 0 || len(c.CmdLine) != 1 || !c.PrependShell || parser.MustParseHeredoc(c.CmdLine[0]) == nil {
		return nil, nil
	}
	data := heredocBody(c.Files[0])
	if !strings.HasPrefix(data, "#!") {
		return nil, nil
	}
	name := c.Files[0].Name
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return nil, fmt.Errorf("heredoc script <<%s: the delimiter must be a file name", name)
	}
	return &sandbox.File{Target: path.Join(heredocPipes, name), Data: []byte(data), Mode: 0o755}, nil
}

// runEnv is the environment of a RUN: the stage env, then build args in
// scope that ENV doesn't override, and a default PATH.
func runEnv(step *planner.Step) []string {
	env, args := step.Env, step.Args
	out := append([]string(nil), env...)
	for _, a := range args {
		k, _, _ := strings.Cut(a, "=")
		if !isEnvKey(out, k) {
			out = append(out, a)
		}
	}
	if !isEnvKey(out, "PATH") {
		out = append(out, "PATH="+planner.DefaultPath)
	}
	return out
}

func isEnvKey(env []string, key string) bool {
	_, ok := getEnv(env, key)
	return ok
}

// runCommandString is BuildKit's history text of a RUN: "|N K=V ... argv",
// one K=V for every ARG declared in scope (its ENV value, else its own,
// else empty), none for the proxy args.
func runCommandString(argv []string, step *planner.Step) string {
	var parts []string
	for _, k := range step.ArgNames {
		v, ok := getEnv(step.Env, k)
		if !ok {
			v, _ = getEnv(step.Args, k)
		}
		parts = append(parts, k+"="+v)
	}
	if len(parts) > 0 {
		parts = append([]string{fmt.Sprintf("|%d", len(parts))}, parts...)
	}
	return strings.Join(append(parts, argv...), " ")
}

func quoteAll(a []string) []string {
	out := make([]string, len(a))
	for i, s := range a {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// dispatchWorkdir sets the working directory and creates it, as BuildKit
// does, owned by the current USER.
func (b *build) dispatchWorkdir(ctx context.Context, sc *stepCtx, c *instructions.WorkdirCommand) error {
	s := sc.s
	wd, err := resolveWorkdirFor(s.img.Config.WorkingDir, c.Path, sc.st.Platform.OS)
	if err != nil {
		return err
	}
	s.img.Config.WorkingDir = wd
	// A Windows image's working directory is written with backslashes;
	// the directory and the history name it with slashes, as BuildKit.
	wd = system.ToSlash(wd, sc.st.Platform.OS)
	if wd == "/" {
		s.history("WORKDIR "+wd, true, s.created)
		return nil
	}
	userSpec, osName := s.img.Config.User, sc.st.Platform.OS
	return b.prepare(sc, change{
		inputs: cache.Inputs{Op: "WORKDIR", Fields: []cache.Field{
			{Name: "path", Value: wd}, {Name: "user", Value: userSpec},
		}},
		createdBy: "WORKDIR " + wd,
		apply: func(ctx context.Context, root string) error {
			return workdirIn(root, wd, userSpec, osName)
		},
	})
}

// workdirIn creates the WORKDIR dir inside root, the new directories
// owned by userSpec's uid/gid, as BuildKit's mkdir of a WORKDIR in an
// image for osName.
func workdirIn(root, dir, userSpec, osName string) error {
	var own copyOwner
	if userSpec != "" {
		// BuildKit makes the directory with a file operation owned by the
		// USER, whose ids follow --chown's rules: a numeric user without
		// a group gets gid = uid, whatever /etc/passwd says.
		uid, gid, err := resolveChown(root, userSpec, osName)
		if err != nil {
			return err
		}
		own = copyOwner{uid: uid, gid: gid}
	}
	return mkdirAllIn(root, dir, 0o755, own)
}

// resolveChown resolves a --chown (or a WORKDIR's USER) in root, the
// files of an image for osName: a Windows image's users are no entries
// of /etc/passwd (user.ResolveChownWindows).
func resolveChown(root, spec, osName string) (uid, gid int, err error) {
	if osName == "windows" {
		return user.ResolveChownWindows(root, spec)
	}
	return user.ResolveChown(root, spec)
}

// RunError is a RUN command that exited non-zero or was killed.
type RunError struct {
	Argv   []string
	Code   int
	Signal string
	Tail   []string // last lines of output
	// OOM says how the kernel's OOM killer ended the step ("killed: out
	// of memory (limit 512 MiB)"), under --memory.
	OOM string
}

func (e *RunError) Error() string {
	status := fmt.Sprintf("exit code: %d", e.Code)
	if e.Signal != "" {
		status = fmt.Sprintf("killed by signal %s (exit code: %d)", e.Signal, e.Code)
	}
	msg := fmt.Sprintf("process %q did not complete successfully: %s", strings.Join(e.Argv, " "), status)
	if e.OOM != "" {
		msg = fmt.Sprintf("process %q %s", strings.Join(e.Argv, " "), e.OOM)
	}
	if len(e.Tail) > 0 {
		msg += "\n------\n" + strings.Join(e.Tail, "\n") + "\n------"
	}
	return msg
}

// tailBuffer keeps the last max lines written to it.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	partial []byte
	done    []string
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, p...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			break
		}
		t.done = append(t.done, string(t.partial[:i]))
		t.partial = t.partial[i+1:]
		if len(t.done) > t.max {
			t.done = t.done[len(t.done)-t.max:]
		}
	}
	if len(t.partial) > 4096 {
		t.partial = t.partial[len(t.partial)-4096:]
	}
	return len(p), nil
}

func (t *tailBuffer) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.done...)
	if len(t.partial) > 0 {
		out = append(out, string(t.partial))
	}
	if len(out) > t.max {
		out = out[len(out)-t.max:]
	}
	return out
}
