package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// readOut reads a file of a type=local output.
func readOut(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("output %s: %v", name, err)
	}
	return string(b)
}

func TestE2EBuildContextDirectory(t *testing.T) {
	e := newEnv(t)
	named := filepath.Join(e.dir, "named")
	e.write(named, "a.txt", "from the named context\n")
	e.write(named, "sub/b.txt", "b\n")
	e.write(named, "secret.key", "must not be sent\n")
	e.write(named, ".dockerignore", "*.key\n")
	// The main context's ignore file must not apply to the named one.
	ctx := e.context(`FROM busybox:fixture
COPY --from=extra a.txt /a.txt
COPY --from=extra . /all/
RUN --mount=from=extra,target=/m cat /m/sub/b.txt > /b.txt && ls /m > /listing
`, map[string]string{".dockerignore": "a.txt\nsub\n"})
	out := filepath.Join(e.dir, "out")
	e.mustRun("build", "--build-context", "extra="+named, "-o", "type=local,dest="+out, ctx)
	if got := readOut(t, out, "a.txt"); got != "from the named context\n" {
		t.Errorf("/a.txt = %q", got)
	}
	if got := readOut(t, out, "b.txt"); got != "b\n" {
		t.Errorf("/b.txt (RUN --mount from=extra) = %q", got)
	}
	if _, err := os.Stat(filepath.Join(out, "all", "secret.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("COPY --from=extra copied a file the context's .dockerignore excludes (stat: %v)", err)
	}
	if got := readOut(t, out, "listing"); strings.Contains(got, "secret.key") || !strings.Contains(got, "a.txt") {
		t.Errorf("RUN --mount from=extra listing = %q: want a.txt, not secret.key", got)
	}
	// A change in the named context misses the cache: the content is keyed.
	e.write(named, "a.txt", "changed\n")
	e.mustRun("build", "--build-context", "extra="+named, "-o", "type=local,dest="+out, ctx)
	if got := readOut(t, out, "a.txt"); got != "changed\n" {
		t.Errorf("after a change, /a.txt = %q (stale cache hit?)", got)
	}
	// FROM a directory context is refused with the line.
	bad := e.context("FROM extra\n", nil)
	_, errOut, err := e.run("build", "--build-context", "extra="+named, bad)
	if err == nil || !strings.Contains(errOut, "Dockerfile:1") || !strings.Contains(errOut, "local directory") {
		t.Errorf("FROM a directory context: err %v\n%s", err, errOut)
	}
	_, errOut, err = e.run("build", "--build-context", "extra="+filepath.Join(e.dir, "nosuch"), ctx)
	if err == nil || !strings.Contains(errOut, "build context extra") {
		t.Errorf("missing directory: err %v\n%s", err, errOut)
	}
}

func TestE2EBuildContextImage(t *testing.T) {
	e := newEnv(t)
	e.write(e.dir, "marker/Dockerfile", "FROM busybox:fixture\nRUN echo marked > /marker\n")
	e.mustRun("build", "-t", "marked:1", filepath.Join(e.dir, "marker"))
	// alpine and golang are not in the store and there is no network:
	// only the contexts make this build possible. The stage "tools" is
	// replaced whole: its RUN would fail.
	ctx := e.context(`FROM golang:1.22 AS tools
RUN exit 1
FROM alpine
COPY --from=tools /marker /from-stage
COPY --from=docker.io/library/alpine:latest /marker /from-image
RUN cat /marker > /base
`, nil)
	out := filepath.Join(e.dir, "out")
	e.mustRun("build", "--network", "none", "--build-context", "alpine=docker-image://marked:1",
		"--build-context", "tools=docker-image://marked:1", "-o", "type=local,dest="+out, ctx)
	for _, f := range []string{"from-stage", "from-image", "base"} {
		if got := readOut(t, out, f); got != "marked\n" {
			t.Errorf("/%s = %q, want the context image's /marker", f, got)
		}
	}
}

func TestE2ERunHeredocShebang(t *testing.T) {
	e := newEnv(t)
	ctx := e.context(`FROM busybox:fixture
RUN <<EOF
#!/bin/sh
set -e
echo "$0" > /script-path
stat -c %a "$0" > /script-mode
if touch "$0" 2>/dev/null; then echo writable; else echo read-only; fi > /script-ro
EOF
RUN <<-AWK
	#!/bin/awk -f
	BEGIN { print "awk ran" > "/awk.txt" }
	AWK
RUN <<EOF
echo plain > /plain.txt
EOF
`, nil)
	out := filepath.Join(e.dir, "out")
	e.mustRun("build", "-t", "heredoc:1", "-o", "type=local,dest="+out, ctx)
	got := map[string]string{}
	for _, f := range []string{"script-path", "script-mode", "script-ro", "awk.txt", "plain.txt"} {
		got[f] = readOut(t, out, f)
	}
	want := map[string]string{
		"script-path": "/dev/pipes/EOF\n", "script-mode": "755\n", "script-ro": "read-only\n",
		"awk.txt": "awk ran\n", "plain.txt": "plain\n",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("outputs (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(out, "dev", "pipes")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/dev/pipes left in the image (stat: %v)", err)
	}
	// A changed script body misses the cache even though argv is the same.
	ctx2 := e.context("FROM busybox:fixture\nRUN <<EOF\n#!/bin/sh\necho one > /v\nEOF\n", nil)
	e.mustRun("build", "-o", "type=local,dest="+out, ctx2)
	e.write(ctx2, "Dockerfile", "FROM busybox:fixture\nRUN <<EOF\n#!/bin/sh\necho two > /v\nEOF\n")
	e.mustRun("build", "-o", "type=local,dest="+out, ctx2)
	if got := readOut(t, out, "v"); got != "two\n" {
		t.Errorf("/v = %q after changing the script: the body is not in the cache key", got)
	}
}

// checkDockerfile has issues of several rules; the expected rule names
// and lines follow buildkit's docs/rules (Docker 20.10's BuildKit has no
// --check to compare with).
const checkDockerfile = `ARG BASE=busybox
FROM ${BASE}:${TAG} as Builder
maintainer me
ENV A 1
WORKDIR app
CMD echo hi
FROM busybox AS builder
ENTRYPOINT ["sh"]
`

var checkWant = []string{
	"Dockerfile:2: StageNameCasing", "Dockerfile:2: FromAsCasing", "Dockerfile:2: UndefinedArgInFrom",
	"Dockerfile:2: InvalidDefaultArgInFrom",
	"Dockerfile:3: MaintainerDeprecated", "Dockerfile:3: ConsistentInstructionCasing",
	"Dockerfile:4: LegacyKeyValueFormat", "Dockerfile:5: WorkdirRelativePath",
	"Dockerfile:6: JSONArgsRecommended", "Dockerfile:7: DuplicateStageName",
}

// runNoRoot runs the builder binary on an empty store; --check needs
// neither root nor images.
func runNoRoot(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(builderBin, append([]string{"--root", t.TempDir()}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// findings returns the "FILE:LINE: Rule" prefixes of lint output lines.
func findings(out string) []string {
	re := regexp.MustCompile(`(?m)^(Dockerfile:\d+: [A-Za-z]+):`)
	var got []string
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		got = append(got, m[1])
	}
	return got
}

func TestE2ECheck(t *testing.T) {
	dir := t.TempDir()
	write := func(df string) {
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(checkDockerfile)
	out, errOut, err := runNoRoot(t, "build", "--check", dir)
	if err != nil {
		t.Fatalf("--check without error=true failed: %v\n%s", err, errOut)
	}
	if diff := cmp.Diff(checkWant, findings(out)); diff != "" {
		t.Errorf("findings (-want +got):\n%s\n%s", diff, out)
	}
	if !strings.Contains(out, "Check complete, 10 warnings have been found!") {
		t.Errorf("no summary:\n%s", out)
	}
	if strings.Contains(errOut, "pulling") || strings.Contains(errOut, "built ") {
		t.Errorf("--check built or pulled:\n%s", errOut)
	}

	write("# check=error=true;skip=MaintainerDeprecated,ConsistentInstructionCasing\n" + checkDockerfile)
	out, errOut, err = runNoRoot(t, "build", "--check", dir)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 || !strings.Contains(errOut, "lint violation found for rules: StageNameCasing") {
		t.Errorf("error=true: err %v, want a non-zero exit naming the rules\n%s", err, errOut)
	}
	got := strings.Join(findings(out), "\n")
	if strings.Contains(got, "MaintainerDeprecated") || strings.Contains(got, "ConsistentInstructionCasing") || !strings.Contains(got, "Dockerfile:3: StageNameCasing") {
		t.Errorf("skip= not applied (lines shift by one for the directive):\n%s", out)
	}

	// The build arg replaces the directive, as BUILDKIT_DOCKERFILE_CHECK does.
	out, errOut, err = runNoRoot(t, "build", "--check", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all", dir)
	if err != nil || !strings.Contains(out, "no warnings found") {
		t.Errorf("skip=all through the build arg: %v\n%s%s", err, out, errOut)
	}

	write("FROM busybox\nCMD [\"sh\"]\n")
	out, _, err = runNoRoot(t, "build", "--check", dir)
	if err != nil || !strings.Contains(out, "Check complete, no warnings found.") {
		t.Errorf("clean Dockerfile: %v\n%s", err, out)
	}
}

func TestE2EBuildReportsLintWarnings(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture as base\nCMD echo hi\n", nil)
	_, errOut := e.mustRun("build", "--progress", "plain", ctx)
	for _, w := range []string{"2 warnings found:", " - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)",
		" - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)"} {
		if !strings.Contains(errOut, w) {
			t.Errorf("build output lacks %q:\n%s", w, errOut)
		}
	}
	e.write(ctx, "Dockerfile", "# check=error=true\nFROM busybox:fixture as base\nRUN echo must-not-run\n")
	_, errOut, err := e.run("build", "--progress", "plain", ctx)
	if err == nil || !strings.Contains(errOut, "lint violation found for rules: FromAsCasing") || strings.Contains(errOut, "must-not-run\n") {
		t.Errorf("error=true build: err %v, want a failure before any step\n%s", err, errOut)
	}
}

// TestE2ECheckCommentBuild: a "# check=" comment after the first line (a
// per-instruction lint config, as buildkit reads it) builds; it used to
// panic in the planner.
func TestE2ECheckCommentBuild(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\n# check=skip=all\nRUN echo one > /one\n#check=error=true\nENV A=b\n", nil)
	out := filepath.Join(e.dir, "out")
	e.mustRun("build", "--network", "none", "-o", "type=local,dest="+out, ctx)
	if got := readOut(t, out, "one"); got != "one\n" {
		t.Errorf("/one = %q, want %q", got, "one\n")
	}
}

// TestE2ESandboxHostname: --build-arg BUILDKIT_SANDBOX_HOSTNAME sets the
// hostname RUN sees (uname, /etc/hostname, /etc/hosts), as BuildKit's
// frontend option; it is no unconsumed build arg, and it is in the key.
func TestE2ESandboxHostname(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nRUN hostname > /h && cat /etc/hostname >> /h && grep -c foo /etc/hosts >> /h || true\n", nil)
	out := filepath.Join(e.dir, "out")
	_, errOut := e.mustRun("build", "--progress", "plain", "--network", "none", "--build-arg", "BUILDKIT_SANDBOX_HOSTNAME=foo", "-o", "type=local,dest="+out, ctx)
	if got := readOut(t, out, "h"); got != "foo\nfoo\n1\n" {
		t.Errorf("hostname, /etc/hostname, /etc/hosts lines = %q", got)
	}
	if strings.Contains(errOut, "not consumed") {
		t.Errorf("BUILDKIT_SANDBOX_HOSTNAME reported as unconsumed:\n%s", errOut)
	}
	m := e.build(ctx, "--network", "none")
	m.wantCache(t, "", "RUN hostname", "miss", "")
}

// TestE2ELowercaseDockerfile: without a Dockerfile, a context's lowercase
// dockerfile is used, as BuildKit does (testDockerfileLowercase).
func TestE2ELowercaseDockerfile(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("", nil)
	if err := os.Remove(filepath.Join(ctx, "Dockerfile")); err != nil {
		t.Fatal(err)
	}
	e.write(ctx, "dockerfile", "FROM busybox:fixture\nENV LOWER=1\n")
	e.mustRun("build", "-t", "lower:1", ctx)
	insp, _ := e.mustRun("inspect", "lower:1")
	if !strings.Contains(insp, "LOWER=1") {
		t.Errorf("image of the lowercase dockerfile lacks LOWER=1:\n%s", insp)
	}
}
