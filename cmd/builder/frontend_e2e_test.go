package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
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
	// FROM a directory context starts from its files (its .dockerignore
	// applied, owned by root) on the empty image, as BuildKit; a rebuild
	// hits, a change misses.
	from := e.context("FROM extra\nCOPY marker /marker\n", map[string]string{"marker": "m\n"})
	if err := os.Chown(filepath.Join(named, "a.txt"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	fromOut := filepath.Join(e.dir, "from")
	e.mustRun("build", "--build-context", "extra="+named, "-t", "fromdir:1", "-o", "type=local,dest="+fromOut, from)
	if got := readOut(t, fromOut, "a.txt") + readOut(t, fromOut, "sub/b.txt") + readOut(t, fromOut, "marker"); got != "changed\nb\nm\n" {
		t.Errorf("FROM extra: a.txt, sub/b.txt, marker = %q", got)
	}
	if fi, err := os.Stat(filepath.Join(fromOut, "a.txt")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("FROM extra: a.txt (owned by 1000 in the context) is not owned by root in the image: %v", err)
	}
	if _, err := os.Stat(filepath.Join(fromOut, "secret.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FROM extra has a file the context's .dockerignore excludes (stat: %v)", err)
	}
	_, errOut, err := e.run("build", "--build-context", "extra="+named, "-t", "fromdir:1", from)
	if err != nil || !strings.Contains(errOut, "[context extra] load from client") || strings.Count(errOut, "CACHED") < 2 {
		t.Errorf("FROM a directory context, rebuilt: err %v, want the context load and the COPY cached\n%s", err, errOut)
	}
	e.write(named, "sub/b.txt", "b2\n")
	e.mustRun("build", "--build-context", "extra="+named, "-o", "type=local,dest="+fromOut, from)
	if got := readOut(t, fromOut, "sub/b.txt"); got != "b2\n" {
		t.Errorf("FROM extra after a change: sub/b.txt = %q (stale cache hit?)", got)
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

// checkDockerfile has issues of many rules, on scratch only: --check
// needs no image for it. The expected output was compared with buildkit
// v0.34.2's lint result (the frontend.lint subrequest of buildkitd,
// printed as buildx's --call check does).
const checkDockerfile = `ARG BASE=scratch
FROM ${BASE}${TAG} as Builder
maintainer me
ENV A 1
WORKDIR app
CMD echo hi
FROM scratch AS builder
ENTRYPOINT ["sh"]
COPY $NOPE /
COPY ignored.txt /
EXPOSE 80/TCP
FROM --platform=linux/amd64 scratch AS other
ENV key value
`

// checkWant are the findings of checkDockerfile, in buildkit's printed
// order: by line, then as its unstable sort leaves them.
var checkWant = []string{
	"Dockerfile:2 FromAsCasing", "Dockerfile:2 StageNameCasing", "Dockerfile:2 UndefinedArgInFrom",
	"Dockerfile:3 MaintainerDeprecated", "Dockerfile:3 ConsistentInstructionCasing",
	"Dockerfile:4 LegacyKeyValueFormat", "Dockerfile:5 WorkdirRelativePath",
	"Dockerfile:6 JSONArgsRecommended", "Dockerfile:7 DuplicateStageName",
	"Dockerfile:9 UndefinedVar", "Dockerfile:10 CopyIgnoredFile", "Dockerfile:11 ExposeProtoCasing",
	"Dockerfile:12 FromPlatformFlagConstDisallowed",
	"Dockerfile:13 LegacyKeyValueFormat", "Dockerfile:13 SecretsUsedInArgOrEnv",
}

// runNoRoot runs the builder binary on an empty store; --check of a
// Dockerfile on scratch needs neither root nor images.
func runNoRoot(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(builderBin, append([]string{"--root", t.TempDir()}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// findings returns "FILE:LINE Rule" for each warning of --check's output
// ("WARNING: Rule - URL", the message, then "FILE:LINE" and the lines).
func findings(out string) []string {
	re := regexp.MustCompile(`(?m)^WARNING: ([A-Za-z]+) - https://docs\.docker\.com/go/dockerfile/rule/[a-z-]+/\n.+\n(\S+:\d+)\n-{20}\n`)
	var got []string
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		got = append(got, m[2]+" "+m[1])
	}
	return got
}

func exitCode(err error) int {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestE2ECheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Dockerfile", checkDockerfile)
	write(".dockerignore", "ignored.txt\n")
	out, errOut, err := runNoRoot(t, "build", "--check", dir)
	if diff := cmp.Diff(checkWant, findings(out)); diff != "" {
		t.Errorf("findings (-want +got):\n%s\n%s", diff, out)
	}
	// As docker build --check: the count first, then each warning with
	// the instruction and two lines around it; exit status 1, no error.
	wantText := "Check complete, 15 warnings have been found!\n\n" +
		"WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n" +
		"'as' and 'FROM' keywords' casing do not match\n" +
		"Dockerfile:2\n--------------------\n" +
		"   1 |     ARG BASE=scratch\n   2 | >>> FROM ${BASE}${TAG} as Builder\n   3 |     maintainer me\n   4 |     ENV A 1\n" +
		"--------------------\n"
	if !strings.HasPrefix(out, wantText) {
		t.Errorf("output does not start with\n%s\ngot:\n%s", wantText, out)
	}
	if code := exitCode(err); code != 1 || errOut != "" {
		t.Errorf("--check with warnings: exit %d (%v), stderr %q; want status 1 and no error", code, err, errOut)
	}
	if strings.Contains(errOut, "pulling") || strings.Contains(errOut, "built ") {
		t.Errorf("--check built or pulled:\n%s", errOut)
	}
	if _, _, err := runNoRoot(t, "build", "--call", "check,ignorestatus=true", dir); err != nil {
		t.Errorf("--call check,ignorestatus=true: %v", err)
	}

	// A target: the dispatch rules only see the stages it needs; the
	// FROM lines are all checked.
	out, _, _ = runNoRoot(t, "build", "--check", "--target", "builder", dir)
	if got := strings.Join(findings(out), "\n"); strings.Contains(got, "Dockerfile:13") || !strings.Contains(got, "Dockerfile:12 FromPlatformFlagConstDisallowed") {
		t.Errorf("--target builder:\n%s", out)
	}

	// error=true: the warnings, then buildkit's error.
	write("Dockerfile", "# check=error=true;skip=MaintainerDeprecated,ConsistentInstructionCasing\n"+checkDockerfile)
	out, errOut, err = runNoRoot(t, "build", "--check", dir)
	got := strings.Join(findings(out), "\n")
	if exitCode(err) != 1 || !strings.Contains(errOut, "ERROR: lint violation found for rules: StageNameCasing, FromAsCasing, DuplicateStageName, UndefinedArgInFrom") {
		t.Errorf("error=true: err %v, want a failure naming the rules\n%s", err, errOut)
	}
	if strings.Contains(got, "MaintainerDeprecated") || strings.Contains(got, "ConsistentInstructionCasing") || !strings.Contains(got, "Dockerfile:3 StageNameCasing") {
		t.Errorf("skip= not applied (lines shift by one for the directive):\n%s", out)
	}

	// The build arg replaces the directive, as BUILDKIT_DOCKERFILE_CHECK does.
	out, errOut, err = runNoRoot(t, "build", "--check", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all", dir)
	if err != nil || out != "Check complete, no warnings found.\n" {
		t.Errorf("skip=all through the build arg: %v\n%s%s", err, out, errOut)
	}

	// A parse error: the warnings before it, then the error where it is.
	write("Dockerfile", "\nFROM scratch AS BadStageName\nMAINTAINER me@example.org\nBADCMD\n")
	out, errOut, err = runNoRoot(t, "build", "--check", dir)
	if diff := cmp.Diff([]string{"Dockerfile:2 StageNameCasing", "Dockerfile:3 MaintainerDeprecated"}, findings(out)); diff != "" {
		t.Errorf("warnings before a parse error (-want +got):\n%s\n%s", diff, out)
	}
	wantErr := "ERROR: dockerfile parse error on line 4: unknown instruction: BADCMD\nDockerfile:4\n--------------------\n" +
		"   2 |     FROM scratch AS BadStageName\n   3 |     MAINTAINER me@example.org\n   4 | >>> BADCMD\n   5 |     \n--------------------\n"
	if exitCode(err) != 1 || errOut != wantErr {
		t.Errorf("parse error: %v\n got: %q\nwant: %q", err, errOut, wantErr)
	}

	write("Dockerfile", "FROM scratch\nCMD [\"sh\"]\n")
	out, _, err = runNoRoot(t, "build", "--check", dir)
	if err != nil || out != "Check complete, no warnings found.\n" {
		t.Errorf("clean Dockerfile: %v\n%s", err, out)
	}
}

// TestE2ECheckJSON: --call check,format=json prints buildkit's lint
// result: each warning's rule, description, URL, message and location,
// the source, and the error that stopped the check.
func TestE2ECheckJSON(t *testing.T) {
	dir := t.TempDir()
	src := "# check=error=true\nFROM scratch as a\nCOPY $X /\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := runNoRoot(t, "build", "--call", "check,format=json", dir)
	if exitCode(err) != 1 || !strings.Contains(errOut, "lint violation found for rules: FromAsCasing, UndefinedVar") {
		t.Errorf("error=true: %v\n%s", err, errOut)
	}
	type position struct {
		Line int `json:"line"`
	}
	var res struct {
		Warnings []struct {
			RuleName, Description, URL, Detail string
			Location                           struct {
				Ranges []struct{ Start, End position }
			}
		}
		Sources []struct {
			Filename, Language string
			Data               []byte
		}
		BuildError *struct{ Message string } `json:"buildError"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(res.Warnings) != 2 || len(res.Sources) != 1 || res.BuildError == nil {
		t.Fatalf("want 2 warnings, 1 source, an error:\n%s", out)
	}
	w := res.Warnings[1]
	if w.RuleName != "UndefinedVar" || w.Description != "Variables should be defined before their use" ||
		w.URL != "https://docs.docker.com/go/dockerfile/rule/undefined-var/" || w.Detail != "Usage of undefined variable '$X'" ||
		len(w.Location.Ranges) != 1 || w.Location.Ranges[0].Start.Line != 3 || w.Location.Ranges[0].End.Line != 3 {
		t.Errorf("warning = %+v", w)
	}
	if s := res.Sources[0]; s.Filename != "Dockerfile" || s.Language != "Dockerfile" || string(s.Data) != src {
		t.Errorf("source = %+v", s)
	}
	if res.BuildError.Message != "lint violation found for rules: FromAsCasing, UndefinedVar" {
		t.Errorf("buildError = %+v", res.BuildError)
	}
}

// TestE2ECheckBaseImage: --check resolves the base images, so that the
// rules that need their config apply (UndefinedVar sees the image's
// env).
func TestE2ECheckBaseImage(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nENV PATH=$PAHT:/x\nCOPY $PATH /\n", nil)
	out, errOut, err := e.run("build", "--check", ctx)
	want := []string{"Dockerfile:2 UndefinedVar"}
	if diff := cmp.Diff(want, findings(out)); diff != "" || exitCode(err) != 1 {
		t.Errorf("findings (-want +got):\n%s\n%s%s", diff, out, errOut)
	}
	if !strings.Contains(out, "Usage of undefined variable '$PAHT' (did you mean $PATH?)") {
		t.Errorf("no suggestion from the image env:\n%s", out)
	}
}

func TestE2EBuildReportsLintWarnings(t *testing.T) {
	e := newEnv(t)
	// The stage that is not built has no dispatch warnings (its
	// LegacyKeyValueFormat); its FROM line is checked.
	ctx := e.context("FROM busybox:fixture AS unused\nENV a b\nFROM busybox:fixture as base\nCMD echo hi\nCOPY $NOPE /\n", nil)
	_, errOut := e.mustRun("build", "--progress", "plain", ctx)
	for _, w := range []string{"3 warnings found:", " - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 3)",
		" - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 4)",
		" - UndefinedVar: Usage of undefined variable '$NOPE' (line 5)"} {
		if !strings.Contains(errOut, w) {
			t.Errorf("build output lacks %q:\n%s", w, errOut)
		}
	}
	if strings.Contains(errOut, "LegacyKeyValueFormat") {
		t.Errorf("warning of a stage that is not built:\n%s", errOut)
	}
	_, errOut = e.mustRun("build", "--progress", "rawjson", ctx)
	want := vertexWarn{Level: 1, Short: []byte("UndefinedVar: Usage of undefined variable '$NOPE' (line 5)"),
		Detail: [][]byte{[]byte("Variables should be defined before their use")}, URL: "https://docs.docker.com/go/dockerfile/rule/undefined-var/",
		Range: []sourceRange{{Start: position{Line: 5}, End: position{Line: 5}}}, Rule: "UndefinedVar", Message: "Usage of undefined variable '$NOPE'"}
	if !slices.ContainsFunc(rawWarnings(t, errOut), func(w vertexWarn) bool { return cmp.Equal(w, want) }) {
		t.Errorf("rawjson lacks the warning %+v:\n%s", want, errOut)
	}
	e.write(ctx, "Dockerfile", "# check=error=true\nFROM busybox:fixture as base\nRUN echo must-not-run\n")
	_, errOut, err := e.run("build", "--progress", "plain", ctx)
	if err == nil || !strings.Contains(errOut, "lint violation found for rules: FromAsCasing") || strings.Contains(errOut, "must-not-run\n") {
		t.Errorf("error=true build: err %v, want a failure before any step\n%s", err, errOut)
	}
	// A parse error: the warnings found before it, then the error.
	e.write(ctx, "Dockerfile", "FROM busybox:fixture AS Bad\nBADCMD\n")
	_, errOut, err = e.run("build", "--progress", "plain", ctx)
	if err == nil || !strings.Contains(errOut, " - StageNameCasing: Stage name 'Bad' should be lowercase (line 1)") ||
		!strings.Contains(errOut, "dockerfile parse error on line 2: unknown instruction: BADCMD") {
		t.Errorf("parse error: err %v, want the warning then the error\n%s", err, errOut)
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
// hostname RUN sees (uname, /etc/hosts; BuildKit gives no /etc/hostname),
// as BuildKit's frontend option; it is no unconsumed build arg, and it is
// in the key.
func TestE2ESandboxHostname(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nRUN hostname > /h && grep -c foo /etc/hosts >> /h && ls /etc/hostname >> /h 2>&1 || true\n", nil)
	out := filepath.Join(e.dir, "out")
	_, errOut := e.mustRun("build", "--progress", "plain", "--network", "none", "--build-arg", "BUILDKIT_SANDBOX_HOSTNAME=foo", "-o", "type=local,dest="+out, ctx)
	if got := readOut(t, out, "h"); got != "foo\n1\nls: /etc/hostname: No such file or directory\n" {
		t.Errorf("hostname, /etc/hosts lines, ls /etc/hostname = %q", got)
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

// rawWarnings returns the warnings of a --progress rawjson stream.
func rawWarnings(t *testing.T, stream string) []vertexWarn {
	t.Helper()
	var out []vertexWarn
	for _, line := range strings.Split(stream, "\n") {
		var st solveStatus
		if json.Unmarshal([]byte(line), &st) == nil {
			out = append(out, st.Warnings...)
		}
	}
	return out
}
