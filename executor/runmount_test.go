package executor

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/parser"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"golang.org/x/sys/unix"
)

// parseMountLine parses "RUN --mount=... cmd" as the planner does (buildkit's
// parser, then Expand) and validates its mounts with workdir wd.
func parseMountLine(t *testing.T, line, wd string) ([]*runMount, error) {
	t.Helper()
	df, err := parser.Parse(strings.NewReader("FROM scratch\n"+line+"\n"), "Dockerfile")
	if err != nil {
		return nil, err
	}
	run := df.Stages[0].Commands[0].(*instructions.RunCommand)
	if err := run.Expand(func(w string) (string, error) { return w, nil }); err != nil {
		return nil, err
	}
	return parseRunMounts(instructions.GetMounts(run), wd)
}

func u64(v uint64) *uint64 { return &v }

func TestParseRunMounts(t *testing.T) {
	cases := []struct {
		line, wd string
		want     runMount
	}{
		{"RUN --mount=type=cache,target=/root/.cache true", "/", runMount{Type: "cache", Target: "/root/.cache", Source: "/", ID: "/root/.cache", Sharing: "shared"}},
		{"RUN --mount=type=cache,target=c,sharing=locked,id=../../../x,mode=0700,uid=1,gid=2 true", "/w", runMount{Type: "cache", Target: "/w/c", Source: "/", ID: "../../../x", Sharing: "locked", Mode: u64(0o700), UID: u64(1), GID: u64(2)}},
		{"RUN --mount=target=/src true", "/", runMount{Type: "bind", Target: "/src", Source: "/", ReadOnly: true}},
		{"RUN --mount=type=bind,source=../../etc,target=/src,rw true", "/", runMount{Type: "bind", Target: "/src", Source: "/etc"}},
		{"RUN --mount=type=bind,from=build,src=/out,dst=out true", "/app", runMount{Type: "bind", Target: "/app/out", Source: "/out", From: "build", ReadOnly: true}},
		{"RUN --mount=type=tmpfs,target=/t,size=1m true", "/", runMount{Type: "tmpfs", Target: "/t", Size: 1 << 20}},
		{"RUN --mount=type=secret,id=aws true", "/", runMount{Type: "secret", ID: "aws", Target: "/run/secrets/aws", ReadOnly: true, Mode: u64(0o400)}},
		{"RUN --mount=type=secret,target=/k/key,required,mode=0440,uid=5 true", "/", runMount{Type: "secret", ID: "key", Target: "/k/key", ReadOnly: true, Required: true, Mode: u64(0o440), UID: u64(5)}},
		{"RUN --mount=type=secret,id=tok,env=TOKEN true", "/", runMount{Type: "secret", ID: "tok", Env: "TOKEN", ReadOnly: true, Mode: u64(0o400)}},
		{"RUN --mount=type=secret,id=tok,env=TOKEN,target=/t true", "/", runMount{Type: "secret", ID: "tok", Env: "TOKEN", Target: "/t", ReadOnly: true, Mode: u64(0o400)}},
	}
	for _, c := range cases {
		ms, err := parseMountLine(t, c.line, c.wd)
		if err != nil {
			t.Errorf("%s: %v", c.line, err)
			continue
		}
		if diff := cmp.Diff(&c.want, ms[0], cmpopts.IgnoreUnexported(runMount{})); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.line, diff)
		}
	}
}

// RUN-05: unknown types, sharing modes and keys are rejected with a
// suggestion; so are mounts without a target or on /.
func TestParseRunMountsInvalid(t *testing.T) {
	for line, want := range map[string]string{
		"RUN --mount=type=cahce,target=/c true":              `unsupported mount type "cahce"`,
		"RUN --mount=type=cache,target=/c,sharing=lock true": `unsupported sharing value "lock"`,
		"RUN --mount=type=cache,target=/c,sorce=/x true":     "unexpected key 'sorce'",
		"RUN --mount=type=ssh,source=/x true":                "ssh does not support source",
		"RUN --mount=type=ssh,target=/ true":                 "invalid mount target",
		"RUN --mount=type=bind true":                         "target is required",
		"RUN --mount=type=cache,target=/ true":               "invalid mount target",
		"RUN --mount=type=tmpfs,target=/t,source=/x true":    "no source",
		"RUN --mount=type=bind,target=/t,mode=0700 true":     "mode not allowed",
		"RUN --mount=type=bind,target=/t,id=x true":          "id is only for",
		"RUN --mount=type=secret,id=a,target=/ true":         "invalid mount target",
	} {
		_, err := parseMountLine(t, line, "/")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", line, err, want)
		}
	}
}

func TestParseRunMountsSuggest(t *testing.T) {
	_, err := parseMountLine(t, "RUN --mount=type=cahce,target=/c true", "/")
	if err == nil || !strings.Contains(err.Error(), "cache") {
		t.Errorf("no suggestion: %v", err)
	}
}

// The key field is the mount's spec: every spec change changes it, and a
// secret's value is never in it.
func TestRunMountKeyField(t *testing.T) {
	base := "RUN --mount=type=cache,target=/c true"
	seen := map[string]string{}
	for _, line := range []string{
		base,
		"RUN --mount=type=cache,target=/d true",
		"RUN --mount=type=cache,target=/c,id=x true",
		"RUN --mount=type=cache,target=/c,sharing=locked true",
		"RUN --mount=type=cache,target=/c,mode=0700 true",
		"RUN --mount=type=cache,target=/c,ro true",
		"RUN --mount=type=bind,target=/c true",
		"RUN --mount=type=tmpfs,target=/c true",
		"RUN --mount=type=tmpfs,target=/c,size=1k true",
		"RUN --mount=type=secret,id=c true",
		"RUN --mount=type=secret,id=c,env=C true",
		"RUN --mount=type=ssh true",
		"RUN --mount=type=ssh,id=c true",
		"RUN --mount=type=ssh,target=/c true",
		"RUN --mount=type=ssh,required true",
		"RUN --mount=type=ssh,mode=0644 true",
		"RUN --mount=type=ssh,uid=1 true",
	} {
		ms, err := parseMountLine(t, line, "/")
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		f := ms[0].keyField()
		if other, ok := seen[f.Value]; ok {
			t.Errorf("%s and %s have the same key field %s", line, other, f.Value)
		}
		seen[f.Value] = line
	}
	ms, _ := parseMountLine(t, base, "/")
	a := ms[0].keyField()
	ms[0].FromKey = "sha256:1"
	if ms[0].keyField() == a {
		t.Errorf("from key not in the key field")
	}
}

// A tmpfs mount reaches the sandbox with its size and ro flag.
func TestPrepareMountsTmpfs(t *testing.T) {
	b := &build{e: New(Options{})}
	ms, err := parseMountLine(t, "RUN --mount=type=tmpfs,target=/dev/shm,size=128m --mount=type=tmpfs,target=t,ro true", "/w")
	if err != nil {
		t.Fatal(err)
	}
	sm, err := b.prepareMounts(t.Context(), ms)
	if err != nil {
		t.Fatal(err)
	}
	want := []sandbox.Tmpfs{{Target: "/dev/shm", Size: 128 << 20}, {Target: "/w/t", ReadOnly: true}}
	if diff := cmp.Diff(want, sm.tmpfs); diff != "" {
		t.Errorf("tmpfs mounts (-want +got):\n%s", diff)
	}
}

// A bind mount from a stage is keyed by what it binds, not by the stage's
// key: a rebuilt stage with the same files under the source gives the
// RUN the same key (BuildKit testMountRWCache); a changed file, mode or
// owner changes it.
func TestRunMountBindKeyedByContent(t *testing.T) {
	b := &build{e: New(Options{TempDir: t.TempDir()})}
	key := func(root, fromKey string) cache.Key {
		t.Helper()
		ms, err := parseMountLine(t, "RUN --mount=from=build,src=out,target=/out,rw true", "/")
		if err != nil {
			t.Fatal(err)
		}
		rm := ms[0]
		rm.srcRoot, rm.FromKey = root, fromKey
		p, err := b.bindPlan(t.Context(), rm)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		rm.plan = p
		fields, files := rm.keyInputs(0)
		return cache.KeyOf(cache.Key{}, cache.Inputs{Op: "RUN", Fields: append(fields, rm.keyField()), Files: files})
	}
	stage := func(content string, mode os.FileMode) string {
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "out"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "out/foo"), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		// Outside the source: never in the key.
		if err := os.WriteFile(filepath.Join(root, "cachebust"), []byte(content+fmt.Sprint(mode)), 0o644); err != nil {
			t.Fatal(err)
		}
		return root
	}
	base := key(stage("foo\n", 0o644), "sha256:stage-1")
	if got := key(stage("foo\n", 0o644), "sha256:stage-2"); got != base {
		t.Errorf("same content, another stage key: the key changed")
	}
	if got := key(stage("bar\n", 0o644), "sha256:stage-1"); got == base {
		t.Errorf("changed content: same key")
	}
	if got := key(stage("foo\n", 0o600), "sha256:stage-1"); got == base {
		t.Errorf("changed mode: same key")
	}
	if os.Geteuid() == 0 {
		root := stage("foo\n", 0o644)
		if err := os.Lchown(filepath.Join(root, "out/foo"), 1000, 1000); err != nil {
			t.Fatal(err)
		}
		if got := key(root, "sha256:stage-1"); got == base {
			t.Errorf("changed owner: same key")
		}
	}
}

// ssh mounts as BuildKit: the default target counts the RUN's ssh mounts
// (/run/buildkit/ssh_agent.N), mode 0600 unless given, the id as written;
// SSH_AUTH_SOCK is the first one's socket.
func TestParseSSHMounts(t *testing.T) {
	ms, err := parseMountLine(t, "RUN --mount=type=cache,target=/c --mount=type=ssh,uid=1 --mount=type=ssh,id=gh,target=s,required,mode=0741,gid=102 --mount=type=ssh,id=default true", "/w")
	if err != nil {
		t.Fatal(err)
	}
	want := []runMount{
		{Type: "ssh", Target: "/run/buildkit/ssh_agent.0", Mode: u64(0o600), UID: u64(1)},
		{Type: "ssh", Target: "/s", ID: "gh", Required: true, Mode: u64(0o741), GID: u64(102)},
		{Type: "ssh", Target: "/run/buildkit/ssh_agent.2", ID: "default", Mode: u64(0o600)},
	}
	for i, w := range want {
		if diff := cmp.Diff(&w, ms[i+1], cmpopts.IgnoreUnexported(runMount{})); diff != "" {
			t.Errorf("mount %d (-want +got):\n%s", i+1, diff)
		}
	}
	if got := []string{ms[1].sshID(), ms[2].sshID(), ms[3].sshID()}; !cmp.Equal(got, []string{"default", "gh", "default"}) {
		t.Errorf("ids %v", got)
	}
	if sock, ok := sshAuthSock(ms); !ok || sock != "/run/buildkit/ssh_agent.0" {
		t.Errorf("SSH_AUTH_SOCK %q %v", sock, ok)
	}
	if _, ok := sshAuthSock(ms[:1]); ok {
		t.Errorf("SSH_AUTH_SOCK without an ssh mount")
	}
}

// fakeAgent answers every connection with its name.
type fakeAgent string

func (a fakeAgent) Serve(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	_, err := conn.Write([]byte(a))
	return err
}

// A missing agent: BuildKit's errors for a required mount, nothing for
// an optional one. A present one is served on a socket with the mount's
// mode and owner, bound at the target, until the mounts are released.
func TestPrepareSSH(t *testing.T) {
	line := "RUN --mount=type=ssh,required --mount=type=ssh,id=opt --mount=type=ssh,id=gh,required,mode=0741,uid=100,gid=102 true"
	ms, err := parseMountLine(t, line, "/")
	if err != nil {
		t.Fatal(err)
	}
	none := &build{e: New(Options{TempDir: t.TempDir()})}
	if _, err := none.prepareMounts(t.Context(), ms); err == nil || !strings.Contains(err.Error(), `no SSH key "" forwarded from the client`) {
		t.Errorf("no --ssh: %v", err)
	}
	other := &build{e: New(Options{TempDir: t.TempDir(), SSH: map[string]SSHAgent{"x": fakeAgent("x")}})}
	if _, err := other.prepareMounts(t.Context(), ms); err == nil || !strings.Contains(err.Error(), "unset ssh forward key default") {
		t.Errorf("--ssh x: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("serving a socket owned by uid 100 needs root")
	}
	tmp := t.TempDir()
	b := &build{e: New(Options{TempDir: tmp, SSH: map[string]SSHAgent{"default": fakeAgent("d"), "gh": fakeAgent("gh")}})}
	sm, err := b.prepareMounts(t.Context(), ms)
	if err != nil {
		t.Fatal(err)
	}
	if len(sm.binds) != 2 || sm.binds[0].Target != "/run/buildkit/ssh_agent.0" || sm.binds[1].Target != "/run/buildkit/ssh_agent.2" {
		t.Fatalf("binds %+v (the optional mount without agent is skipped)", sm.binds)
	}
	for i, want := range []string{"d", "gh"} {
		conn, err := net.Dial("unix", sm.binds[i].Source)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(conn)
		conn.Close()
		if string(got) != want {
			t.Errorf("socket %d answers %q, want %q", i, got, want)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(sm.binds[1].Source, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != unix.S_IFSOCK|0o741 || st.Uid != 100 || st.Gid != 102 {
		t.Errorf("socket mode %o owner %d:%d, want socket 0741 100:102", st.Mode, st.Uid, st.Gid)
	}
	if err := sm.close(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("left after release: %v", entries)
	}
}

func TestSecretMissing(t *testing.T) {
	b := &build{e: New(Options{Secrets: map[string][]byte{"have": []byte("v")}})}
	ms, err := parseMountLine(t, "RUN --mount=type=secret,id=need,required --mount=type=secret,id=have,env=H true", "/")
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.prepareMounts(t.Context(), ms)
	if err == nil || !strings.Contains(err.Error(), `secret need: not found`) {
		t.Errorf("got %v", err)
	}
	sm, err := b.prepareMounts(t.Context(), ms[1:])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"H=v"}, sm.env); diff != "" || len(sm.files) != 0 {
		t.Errorf("env secret: env %v files %v", sm.env, sm.files)
	}
}

// flockFile: exclusive locks wait for each other (cancellable), and a
// non-blocking one reports errLockBusy.
func TestFlockFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "l")
	unlock, err := flockFile(t.Context(), p, unix.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := flockFile(t.Context(), p, unix.LOCK_EX|unix.LOCK_NB); err != errLockBusy {
		t.Errorf("non-blocking on a held lock: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := flockFile(ctx, p, unix.LOCK_EX); err != context.DeadlineExceeded {
		t.Errorf("blocking on a held lock: %v", err)
	}
	unlock()
	unlock2, err := flockFile(t.Context(), p, unix.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	unlock2()
	if _, err := os.Stat(p); err != nil {
		t.Error(err)
	}
}

// A socket whose path is longer than a socket address holds is still
// made, in its directory, through the directory's descriptor.
func TestListenUnixLongPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := listenUnix(dir, "agent.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if fi, err := os.Stat(filepath.Join(dir, "agent.sock")); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no socket at the long path: %v %v", fi, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	conn, err := net.Dial("unix", fmt.Sprintf("/proc/self/fd/%d/agent.sock", d.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}
