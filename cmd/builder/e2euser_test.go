package main

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// e2eUserEnv names an ordinary user (with a subordinate id range in
// /etc/subuid and /etc/subgid) as whom the end-to-end tests run builder
// instead of root: CI runs the RUN, COPY and cache tests that way, so a
// rootless build is held to what a root build does (.ci/run).
const e2eUserEnv = "BUILDER_E2E_USER"

// e2eUser is the user of $BUILDER_E2E_USER.
type e2eUser struct {
	name     string
	uid, gid uint32
	home     string
}

// e2eUserFromEnv returns the user named by $BUILDER_E2E_USER, or nil.
func e2eUserFromEnv(t *testing.T) *e2eUser {
	t.Helper()
	name := os.Getenv(e2eUserEnv)
	if name == "" {
		return nil
	}
	return lookupE2EUser(t, name)
}

func lookupE2EUser(t *testing.T, name string) *e2eUser {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("$%s: %v", e2eUserEnv, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil || uid == 0 {
		t.Fatalf("$%s: %s is not an ordinary user (uid %s)", e2eUserEnv, name, u.Uid)
	}
	return &e2eUser{name: name, uid: uint32(uid), gid: uint32(gid), home: u.HomeDir}
}

// command is the builder command with args, run as the env's user if it
// has one (with that user's HOME and no XDG directories of root's).
func (e *e2eEnv) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, builderBin, args...)
	if e.user != nil {
		e.user.apply(cmd)
	}
	return cmd
}

// apply makes cmd run as u.
func (u *e2eUser) apply(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid}}
	env := []string{"HOME=" + u.home, "USER=" + u.name, "PATH=" + os.Getenv("PATH")}
	for _, k := range []string{"SOURCE_DATE_EPOCH", "BUILDER_GC_POLICY", "DOCKER_HOST"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if cmd.Env != nil {
		env = append(env, cmd.Env...)
	}
	cmd.Env = env
}

// share lets the env's user reach and write dir: the test's temporary
// directories are root's, mode 0700.
func (e *e2eEnv) share(dir string) {
	e.t.Helper()
	if e.user == nil {
		return
	}
	for d := dir; d != "/" && d != "." && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := os.Chown(dir, int(e.user.uid), int(e.user.gid)); err != nil {
		e.t.Fatal(err)
	}
}

// own gives the env's user the tree at p, as a user's own build context
// would be; the parents of p it created stay root's.
func (e *e2eEnv) own(p string) {
	e.t.Helper()
	if e.user == nil {
		return
	}
	err := filepath.WalkDir(p, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(e.user.uid), int(e.user.gid))
	})
	if err != nil {
		e.t.Fatal(err)
	}
}
