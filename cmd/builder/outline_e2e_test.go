package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// The --call outline and --call targets tests of BuildKit v0.34.2
// (frontend/dockerfile/dockerfile_outline_test.go, dockerfile_targets_test.go),
// with their Dockerfiles and assertions, run on builder's JSON output.

const outlineArgsDockerfile = `
ARG inherited=box
ARG inherited2=box2
ARG unused=abc${inherited2}
# sfx is a suffix
ARG sfx="usy${inherited}"

FROM b${sfx} AS first
# this is not assigned to anything
ARG FOO=123
# BAR is a number
ARG BAR=456
RUN true

FROM alpine${unused} AS second
ARG BAZ
RUN true

FROM scratch AS third
ARG ABC=a
# check=skip=all
ARG password
# alternate_password will show up in the outline
# check=skip=all
ARG alternate_password

# target defines build target
FROM third AS target
COPY --from=first /etc/passwd /

FROM second
`

const outlineSecretsDockerfile = `
FROM busybox AS first
RUN --mount=type=secret,target=/etc/passwd,required=true --mount=type=ssh true

FROM alpine AS second
RUN --mount=type=secret,id=unused --mount=type=ssh,id=ssh2 true

FROM scratch AS third
ARG BAR
RUN --mount=type=secret,id=second${BAR} true

FROM third AS target
COPY --from=first /foo /
RUN --mount=type=ssh,id=ssh3,required true

FROM second
`

const outlineRecursiveDockerfile = `
ARG FOO=123
ARG ABC=abc
ARG DEF=def
ARG FOO=${FOO}${ABC}
ARG BAR=${FOO}456
ARG FOO=${FOO}456${BAR}
FROM scratch
ARG FOO
ARG INFOO=123
ARG INBAR=${INFOO}456
ARG INFOO=${INFOO}456${INBAR}
`

const targetsDockerfile = `
# build defines stage for compiling the binary
FROM alpine AS build
RUN true

FROM busybox as second
RUN false

FROM alpine
RUN false

# binary returns the compiled binary
FROM second AS binary
`

// callJSON runs `build --call CALL,format=json` on a context holding df
// and decodes the result into v.
func callJSON(t *testing.T, e *e2eEnv, call, df string, v any, flags ...string) {
	t.Helper()
	dir := e.context(df, nil)
	out, _ := e.mustRun(append(append([]string{"build", "--call", call + ",format=json"}, flags...), dir)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("--call %s: %v\n%s", call, err, out)
	}
}

func startLine(l *locationJSON) int {
	if l == nil || len(l.Ranges) == 0 {
		return -1
	}
	return l.Ranges[0].Start.Line
}

// testOutlineArgs.
func TestE2EOutlineArgs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustRun("tag", "busybox:fixture", "busybox")
	var o outlineResult
	callJSON(t, e, "outline", outlineArgsDockerfile, &o, "--build-arg", "BAR=678", "--target", "target")
	if o.Name != "target" || o.Description != "defines build target" {
		t.Errorf("name %q, description %q", o.Name, o.Description)
	}
	if len(o.Sources) != 1 || string(o.Sources[0]) != outlineArgsDockerfile {
		t.Errorf("sources: %q", o.Sources)
	}
	want := []struct {
		name, value, desc string
		line              int // -1: not asserted upstream
	}{
		{"inherited", "box", "", 2},
		{"sfx", "usybox", "is a suffix", 6},
		{"FOO", "123", "", 10},
		{"BAR", "678", "is a number", -1},
		{"ABC", "a", "", -1},
		{"password", "", "", 22},
		{"alternate_password", "", "will show up in the outline", 25},
	}
	if len(o.Args) != len(want) {
		t.Fatalf("args %+v, want %d", o.Args, len(want))
	}
	for i, w := range want {
		a := o.Args[i]
		if a.Name != w.name || a.Value != w.value || a.Description != w.desc || (w.line >= 0 && startLine(a.Location) != w.line) {
			t.Errorf("args[%d] = %+v (line %d), want %+v", i, a, startLine(a.Location), w)
		}
	}
}

// testOutlineSecrets.
func TestE2EOutlineSecrets(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustRun("tag", "busybox:fixture", "busybox")
	var o outlineResult
	callJSON(t, e, "outline", outlineSecretsDockerfile, &o, "--build-arg", "BAR=678", "--target", "target")
	type m struct {
		name     string
		required bool
		line     int
	}
	check := func(kind string, got []outlineSecret, want []m) {
		if len(got) != len(want) {
			t.Errorf("%s: %+v, want %+v", kind, got, want)
			return
		}
		for i, w := range want {
			if got[i].Name != w.name || got[i].Required != w.required || startLine(got[i].Location) != w.line {
				t.Errorf("%s[%d] = %+v (line %d), want %+v", kind, i, got[i], startLine(got[i].Location), w)
			}
		}
	}
	check("secrets", o.Secrets, []m{{"passwd", true, 3}, {"second678", false, 10}})
	check("ssh", o.SSH, []m{{"default", false, 3}, {"ssh3", true, 14}})
}

// testOutlineRecursiveArgs.
func TestE2EOutlineRecursiveArgs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var o outlineResult
	callJSON(t, e, "outline", outlineRecursiveDockerfile, &o)
	want := [][2]string{{"ABC", "abc"}, {"BAR", "123abc456"}, {"FOO", "123abc456123abc456"}, {"INBAR", "123456"}, {"INFOO", "123456123456"}}
	if len(o.Args) != len(want) {
		t.Fatalf("args %+v, want %v", o.Args, want)
	}
	for i, w := range want {
		if o.Args[i].Name != w[0] || o.Args[i].Value != w[1] {
			t.Errorf("args[%d] = %+v, want %v", i, o.Args[i], w)
		}
	}
}

// testTargetsList, and the text forms buildx prints.
func TestE2ETargetsList(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var l targetsResult
	callJSON(t, e, "targets", targetsDockerfile, &l)
	if len(l.Sources) != 1 || string(l.Sources[0]) != targetsDockerfile {
		t.Errorf("sources: %q", l.Sources)
	}
	want := []target{
		{Name: "build", Base: "alpine", Description: "defines stage for compiling the binary"},
		{Name: "second", Base: "busybox"},
		{Base: "alpine"},
		{Name: "binary", Base: "second", Description: "returns the compiled binary", Default: true},
	}
	lines := []int{3, 6, 9, 13}
	if len(l.Targets) != len(want) {
		t.Fatalf("targets %+v", l.Targets)
	}
	for i, w := range want {
		g := l.Targets[i]
		if g.Name != w.Name || g.Base != w.Base || g.Description != w.Description || g.Default != w.Default || startLine(g.Location) != lines[i] {
			t.Errorf("targets[%d] = %+v (line %d), want %+v (line %d)", i, g, startLine(g.Location), w, lines[i])
		}
	}
	out, _ := e.mustRun("build", "--call", "targets", e.context(targetsDockerfile, nil))
	if want := "TARGET           DESCRIPTION\nbuild            defines stage for compiling the binary\nsecond           \n                 \nbinary (default) returns the compiled binary\n"; out != want {
		t.Errorf("targets text:\n%q\nwant\n%q", out, want)
	}
	out, _ = e.mustRun("build", "--call", "outline", e.context(outlineRecursiveDockerfile, nil))
	if !strings.HasPrefix(out, "BUILD ARG   VALUE                DESCRIPTION\nABC         abc                  \n") {
		t.Errorf("outline text:\n%s", out)
	}
}
