package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/fixtures"
	"github.com/builder-dev/builder/internal/testenv"
)

// The end-to-end tests in this package run the real builder binary, built
// once by TestMain, against a store root in a temporary directory.

var builderBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "builder-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Readable by all: $BUILDER_E2E_USER runs it too.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	builderBin = filepath.Join(dir, "builder")
	out, err := exec.Command("go", "build", "-o", builderBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build builder: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// e2eEnv is one store root with the busybox base image loaded as
// busybox:fixture.
type e2eEnv struct {
	t    *testing.T
	root string
	dir  string // scratch space for contexts
	// user, when set, is the ordinary user as whom builder runs
	// ($BUILDER_E2E_USER): a rootless build.
	user *e2eUser
}

// newEnv makes a store root and builds the busybox base image into it.
func newEnv(t *testing.T) *e2eEnv {
	t.Helper()
	testenv.RequireRoot(t)
	dir := t.TempDir()
	e := &e2eEnv{t: t, root: filepath.Join(dir, "root"), dir: dir, user: e2eUserFromEnv(t)}
	e.share(dir)
	base := filepath.Join(dir, "base")
	if err := fixtures.BusyboxRootfs(context.Background(), filepath.Join(base, "rootfs")); err != nil {
		t.Fatalf("busybox rootfs: %v", err)
	}
	e.write(base, "Dockerfile", "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n")
	e.own(base)
	e.mustRun("build", "-t", "busybox:fixture", base)
	return e
}

// write creates dir/name with content (parents included).
func (e *e2eEnv) write(dir, name, content string) string {
	e.t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.own(filepath.Dir(p))
	return p
}

// context makes a fresh build context directory with a Dockerfile and files.
func (e *e2eEnv) context(dockerfile string, files map[string]string) string {
	e.t.Helper()
	d, err := os.MkdirTemp(e.dir, "ctx-")
	if err != nil {
		e.t.Fatal(err)
	}
	e.share(d)
	e.write(d, "Dockerfile", dockerfile)
	for name, content := range files {
		e.write(d, name, content)
	}
	return d
}

// run runs builder --root ROOT args... and returns stdout, stderr and error.
func (e *e2eEnv) run(args ...string) (string, string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := e.command(ctx, append([]string{"--root", e.root}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// mustRun is run that fails the test on error.
func (e *e2eEnv) mustRun(args ...string) (string, string) {
	e.t.Helper()
	out, errOut, err := e.run(args...)
	if err != nil {
		e.t.Fatalf("builder %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out, errOut
}

func TestE2EBuildRunHistory(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nARG V=1\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt && echo $V >> /b.txt\nCMD [\"cat\", \"/b.txt\"]\n",
		map[string]string{"a.txt": "hello\n"})
	m := e.build(ctx, "-t", "t:1")
	for _, prefix := range []string{"COPY", "RUN"} {
		if s := m.step(t, "", prefix); s.Cache != "miss" || s.Reason != "no earlier build" {
			t.Errorf("first build: %s is %s (%s), want a miss: no earlier build", s.Instruction, s.Cache, s.Reason)
		}
	}
	m = e.build(ctx, "-t", "t:1")
	wantAllHits(t, m)
	m = e.build(ctx, "--build-arg", "V=2", "-t", "t:1")
	if s := m.step(t, "", "RUN"); s.Cache != "miss" || s.Reason != "build arg V changed (1 → 2)" {
		t.Errorf("changed build arg: RUN is %s (%s), want a miss: build arg V changed (1 → 2)", s.Cache, s.Reason)
	}
	out, _ := e.mustRun("history", "t:1")
	if !strings.Contains(out, "miss: build arg V changed (1 → 2)") || !strings.Contains(out, "COPY a.txt /a.txt # buildkit") {
		t.Errorf("history lacks the miss reason or the COPY row:\n%s", out)
	}
}

// wantAllHits fails the test unless every step of the build with a cache
// key was a hit.
func wantAllHits(t *testing.T, m *buildMeta) {
	t.Helper()
	keyed := 0
	for _, s := range m.Steps {
		if s.Key == "" {
			continue
		}
		keyed++
		if s.Cache != "hit" {
			t.Errorf("unchanged rebuild: line %d %s is %s (%s), want a hit", s.Line, s.Instruction, s.Cache, s.Reason)
		}
	}
	if keyed == 0 {
		t.Errorf("no step with a cache key in the metadata:\n%s", m.raw)
	}
}

func TestE2EReproducibleWithSourceDateEpoch(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nCOPY a.txt /a.txt\nRUN echo built > /b.txt\nENV X=1\n",
		map[string]string{"a.txt": "data\n"})
	var ids []string
	for i := 0; i < 2; i++ {
		iid := filepath.Join(e.dir, fmt.Sprintf("iid-%d", i))
		tarball := filepath.Join(e.dir, fmt.Sprintf("img-%d.tar", i))
		e.mustRun("build", "--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000",
			"--iidfile", iid, "-o", "type=docker,dest="+tarball, ctx)
		b, err := os.ReadFile(iid)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, string(b))
		time.Sleep(1100 * time.Millisecond) // a clock-dependent timestamp would now differ
	}
	if ids[0] != ids[1] || !strings.HasPrefix(ids[0], "sha256:") {
		t.Fatalf("two --no-cache builds with SOURCE_DATE_EPOCH gave %q and %q", ids[0], ids[1])
	}
	a, err := os.ReadFile(filepath.Join(e.dir, "img-0.tar"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(e.dir, "img-1.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("docker archives of the two builds differ (%d and %d bytes)", len(a), len(b))
	}
	out, _ := e.mustRun("inspect", strings.TrimSpace(ids[0]))
	if !strings.Contains(out, "2023-11-14T22:13:20Z") {
		t.Errorf("config times are not clamped to SOURCE_DATE_EPOCH:\n%s", out)
	}
}

func TestE2ECachedRebuildSameDigest(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nCOPY a.txt /a.txt\nRUN echo x > /x\nLABEL a=b\n", map[string]string{"a.txt": "1\n"})
	iid1, iid2 := filepath.Join(e.dir, "1"), filepath.Join(e.dir, "2")
	first := e.build(ctx, "--iidfile", iid1)
	time.Sleep(1100 * time.Millisecond) // a clock-dependent timestamp would now differ
	second := e.build(ctx, "--iidfile", iid2)
	wantAllHits(t, second)
	if s := second.step(t, "", "RUN"); s.Layer == "" || s.Layer != first.step(t, "", "RUN").Layer {
		t.Errorf("the cached RUN's layer %q is not the first build's %q", s.Layer, first.step(t, "", "RUN").Layer)
	}
	a, err := os.ReadFile(iid1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(iid2)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(a), "sha256:") || string(a) != string(b) {
		t.Errorf("fully cached rebuild changed the image digest: %q → %q", a, b)
	}
	if first.ImageDigest == "" || first.ImageDigest != second.ImageDigest {
		t.Errorf("metadata image digests differ: %q → %q", first.ImageDigest, second.ImageDigest)
	}
}

func TestE2EDockerfileFromStdinAndRootAfterCommand(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM scratch\n", map[string]string{"f.txt": "x"})
	tctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	mf := filepath.Join(e.dir, "stdin-meta.json")
	cmd := exec.CommandContext(tctx, builderBin, "build", "--root", e.root, "--progress", "plain", "--metadata-file", mf, "-f", "-", "-t", "stdin:1", ctx)
	cmd.Stdin = strings.NewReader("FROM busybox:fixture\nCOPY f.txt /f.txt\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build -f -: %v\n%s", err, out)
	}
	m := readBuildMeta(t, mf)
	// The Dockerfile read was stdin's, not the context's FROM scratch.
	if s := m.step(t, "", "COPY"); s.Instruction != "COPY f.txt /f.txt" || s.Layer == "" {
		t.Errorf("stdin Dockerfile's COPY: %+v", s)
	}
	if !slices.Equal(m.Tags, []string{"stdin:1"}) || m.ImageDigest == "" {
		t.Fatalf("metadata tags %v digest %q, want stdin:1 and a digest", m.Tags, m.ImageDigest)
	}
	id := shortID(m.ImageDigest)
	cmd = exec.CommandContext(tctx, builderBin, "images", "--root", e.root)
	got, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("--root after the subcommand: %v\n%s", err, got)
	}
	before, _ := e.mustRun("images")
	for flags, out := range map[string]string{"--root before": before, "--root after": string(got)} {
		if !listsImage(out, "stdin", "1", id) {
			t.Errorf("images with %s the subcommand: stdin:1 (%s) not listed:\n%s", flags, id, out)
		}
	}
}

// listsImage reports whether `builder images` output has the row
// REPO TAG ID.
func listsImage(out, repo, tag, id string) bool {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == repo && f[1] == tag && f[2] == id {
			return true
		}
	}
	return false
}

func TestE2EPruneRemovesStaleSnapshots(t *testing.T) {
	e := newEnv(t)
	stale := filepath.Join(e.root, "active", "deadbeef-1", "upper")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	e.write(stale, "left-by-a-killed-build", strings.Repeat("x", 4096))
	out, _ := e.mustRun("prune")
	if _, err := os.Stat(filepath.Dir(stale)); !os.IsNotExist(err) {
		t.Errorf("stale snapshot survived prune (stat: %v)\n%s", err, out)
	}
	out, _ = e.mustRun("images")
	if !strings.Contains(out, "busybox") {
		t.Errorf("prune removed the tagged base image:\n%s", out)
	}
	mount := filepath.Join(e.root, "runcache", "0123abcd")
	e.write(mount, "data", strings.Repeat("y", 8192))
	e.mustRun("prune")
	if _, err := os.Stat(mount); err != nil {
		t.Errorf("prune without --all removed a RUN cache mount: %v", err)
	}
	out, _ = e.mustRun("du")
	if !strings.Contains(out, "RUN cache mounts") {
		t.Errorf("du does not report RUN cache mounts:\n%s", out)
	}
	e.mustRun("prune", "--all")
	if _, err := os.Stat(mount); !os.IsNotExist(err) {
		t.Errorf("prune --all kept a RUN cache mount (stat: %v)", err)
	}
}
