package gitsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strings"
)

// cli runs the git binary the way BuildKit's git source does: no system
// or user configuration, no prompts, file:// only where the user asked for
// it (never for a submodule), and git's advice only when asked for.
type cli struct {
	gitDir, workTree string
	advice           bool
	sshSock          string
	// stderr also receives git's standard error (progress, advice).
	stderr io.Writer
}

// proxyVars are the environment variables git may need to reach a remote.
var proxyVars = []string{"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy"}

func (c cli) with(gitDir, workTree string) cli {
	c.gitDir, c.workTree = gitDir, workTree
	return c
}

func (c cli) command(ctx context.Context, args []string) *exec.Cmd {
	full := []string{"-c", "protocol.file.allow=user"}
	if !c.advice {
		full = append(full, "-c", "advice.detachedHead=false")
	}
	if c.workTree != "" {
		full = append(full, "--work-tree", c.workTree)
	}
	if c.gitDir != "" {
		full = append(full, "--git-dir", c.gitDir)
	}
	cmd := exec.CommandContext(ctx, "git", append(full, args...)...)
	cmd.Dir = c.workTree
	if cmd.Dir == "" {
		cmd.Dir = c.gitDir
	}
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"GIT_TERMINAL_PROMPT=0",
		"GIT_SSH_COMMAND=ssh -F " + os.DevNull + " -o StrictHostKeyChecking=no",
		"LC_ALL=C",
		"GIT_CONFIG_NOSYSTEM=1",
		"HOME=" + os.DevNull,
		"GIT_CONFIG_GLOBAL=" + os.DevNull,
	}
	if c.advice {
		cmd.Env = append(cmd.Env, "GIT_ADVICE=1")
	} else {
		cmd.Env = append(cmd.Env, "GIT_ADVICE=0")
	}
	for _, k := range proxyVars {
		if v, ok := os.LookupEnv(k); ok {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	if c.sshSock != "" {
		cmd.Env = append(cmd.Env, "SSH_AUTH_SOCK="+c.sshSock)
	}
	return cmd
}

// run runs git with args and returns its standard output. When git fails
// because the server cannot do a shallow fetch (dumb HTTP), or refuses a
// commit that it does not advertise, it is run again without --depth, or
// without the commit (fetching everything), as BuildKit does.
func (c cli) run(ctx context.Context, args ...string) ([]byte, error) {
	for {
		var out, errb bytes.Buffer
		cmd := c.command(ctx, args)
		cmd.Stdout = &out
		cmd.Stderr = &errb
		if c.stderr != nil {
			cmd.Stderr = io.MultiWriter(&errb, c.stderr)
		}
		err := cmd.Run()
		if err == nil {
			return out.Bytes(), nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("git %s: %w", args[0], context.Cause(ctx))
		}
		msg := errb.String()
		if strings.Contains(msg, "--depth") || strings.Contains(msg, "shallow") {
			if next := without(args, "--depth=1"); len(next) < len(args) {
				args = next
				continue
			}
		}
		if args[0] == "fetch" && (strings.Contains(msg, "not our ref") || strings.Contains(msg, "unadvertised object")) && IsCommit(args[len(args)-1]) {
			args = args[:len(args)-1]
			continue
		}
		return out.Bytes(), &Error{Args: redactArgs(args), Err: err, Stderr: redact(strings.TrimSpace(msg))}
	}
}

func without(args []string, drop string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if a != drop {
			out = append(out, a)
		}
	}
	return out
}

// Error is a failed git command.
type Error struct {
	Args   []string
	Err    error
	Stderr string
}

func (e *Error) Error() string {
	return fmt.Sprintf("git %s: %v: %s", strings.Join(e.Args, " "), e.Err, e.Stderr)
}

func (e *Error) Unwrap() error { return e.Err }

// redact hides the password of URLs in s.
func redact(s string) string {
	fields := strings.Fields(s)
	for _, f := range fields {
		if u, err := url.Parse(strings.Trim(f, "'\"")); err == nil && u.User != nil {
			if _, ok := u.User.Password(); ok {
				s = strings.ReplaceAll(s, u.User.String()+"@", u.User.Username()+":xxxxx@")
			}
		}
	}
	return s
}

func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = redact(a)
	}
	return out
}

// isNotExist reports whether err is a missing file.
func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
