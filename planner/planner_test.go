package planner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/builder-dev/builder/parser"
	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// fakeResolver serves image configs from a map and records every call.
type fakeResolver struct {
	images map[string]v1.Config // by ref; refs not in the map fail
	calls  []string             // "ref platform"
}

func (f *fakeResolver) resolve(_ context.Context, ref string, p v1.Platform) (*ImageInfo, error) {
	f.calls = append(f.calls, ref+" "+FormatPlatform(p))
	cfg, ok := f.images[ref]
	if !ok {
		return nil, fmt.Errorf("pull access denied for %s", ref)
	}
	return &ImageInfo{Ref: ref, Digest: "sha256:" + strings.Repeat("a", 64), Config: &v1.ConfigFile{Config: cfg}}, nil
}

func newFake() *fakeResolver {
	return &fakeResolver{images: map[string]v1.Config{
		"busybox":   {Env: []string{"PATH=/bin", "BB=1"}},
		"busybox:2": {},
		"golang":    {Env: []string{"GOPATH=/go"}},
		"alpine":    {},
	}}
}

var amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}

func plan(t *testing.T, src string, opts Options) (*Plan, *fakeResolver, error) {
	t.Helper()
	df, err := parser.Parse(strings.NewReader(src), "Dockerfile")
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	f := newFake()
	opts.ResolveImage = f.resolve
	if isZero(opts.BuildPlatform) {
		opts.BuildPlatform = amd64
	}
	p, err := New(t.Context(), df, opts)
	return p, f, err
}

func mustPlan(t *testing.T, src string, opts Options) (*Plan, *fakeResolver) {
	t.Helper()
	p, f, err := plan(t, src, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p, f
}

func str(s string) *string { return &s }

func stageNames(p *Plan) []string {
	var out []string
	for _, s := range p.Stages {
		out = append(out, fmt.Sprintf("%d:%s", s.Index, s.Name))
	}
	return out
}

// stepByLine returns the step that starts at line in the target stage.
func stepByLine(t *testing.T, st *Stage, line int) *Step {
	t.Helper()
	for _, s := range st.Steps {
		if s.Line == line && !s.OnBuild {
			return s
		}
	}
	t.Fatalf("no step at line %d in stage %d", line, st.Index)
	return nil
}

const multi = `FROM golang AS build
RUN go build
FROM build AS test
RUN go test
FROM alpine AS unused
FROM busybox AS final
COPY --from=build /out /app
`

func TestTargetPruning(t *testing.T) {
	tests := []struct {
		target string
		want   []string
		calls  []string
	}{
		{"", []string{"0:build", "3:final"}, []string{"golang linux/amd64", "busybox linux/amd64"}},
		{"test", []string{"0:build", "1:test"}, []string{"golang linux/amd64"}},
		{"TEST", []string{"0:build", "1:test"}, []string{"golang linux/amd64"}},
		{"build", []string{"0:build"}, []string{"golang linux/amd64"}},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			p, f := mustPlan(t, multi, Options{Target: tt.target})
			if diff := cmp.Diff(tt.want, stageNames(p)); diff != "" {
				t.Errorf("stages (-want +got):\n%s", diff)
			}
			if p.Target != p.Stages[len(p.Stages)-1] {
				t.Error("Target is not the last stage")
			}
			if diff := cmp.Diff(tt.calls, f.calls); diff != "" {
				t.Errorf("resolver calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDependencies(t *testing.T) {
	p, _ := mustPlan(t, multi, Options{Target: "test"})
	test := p.Stages[1]
	if test.Base.Stage != p.Stages[0] || !slices.Equal(test.DependsOn, []int{0}) {
		t.Errorf("test stage base %v deps %v", test.Base, test.DependsOn)
	}
	p, _ = mustPlan(t, multi, Options{})
	cp := p.Target.Steps[0]
	if fromOf(cp).Stage != p.Stages[0] || fromOf(cp).Image != nil || !slices.Equal(p.Target.DependsOn, []int{0}) {
		t.Errorf("COPY --from=build: stage %v image %v deps %v", fromOf(cp).Stage, fromOf(cp).Image, p.Target.DependsOn)
	}
}

func TestUnknownTarget(t *testing.T) {
	_, _, err := plan(t, multi, Options{Target: "tset"})
	for _, want := range []string{`target stage "tset" could not be found`, "did you mean test?", "stages: build, test, unused, final"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not contain %q", err, want)
		}
	}
}

func TestResolveOncePerRef(t *testing.T) {
	src := "FROM busybox AS a\nFROM busybox AS b\nCOPY --from=busybox /x /y\nCOPY --from=a /x /y\nRUN --mount=from=busybox,target=/m true\n"
	_, f := mustPlan(t, src, Options{})
	if diff := cmp.Diff([]string{"busybox linux/amd64"}, f.calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestFromExpansion(t *testing.T) {
	tests := []struct {
		name, src string
		args      map[string]*string
		calls     []string
	}{
		{"meta default", "ARG BASE=busybox\nFROM $BASE\n", nil, []string{"busybox linux/amd64"}},
		{"build arg", "ARG TAG=1\nFROM busybox:${TAG}\n", map[string]*string{"TAG": str("2")}, []string{"busybox:2 linux/amd64"}},
		{"default from meta", "ARG A=busy\nARG B=${A}box\nFROM $B\n", nil, []string{"busybox linux/amd64"}},
		{"nil build arg is unset", "ARG B=busybox\nFROM $B\n", map[string]*string{"B": nil}, []string{"busybox linux/amd64"}},
		{"predefined", "FROM --platform=$BUILDPLATFORM golang\n", nil, []string{"golang linux/amd64"}},
		{"platform flag", "FROM --platform=linux/arm64 golang\n", nil, []string{"golang linux/arm64"}},
		{"stage by name", "FROM busybox AS base\nARG X\nFROM base\n", nil, []string{"busybox linux/amd64"}},
		{"stage by index", "FROM busybox\nFROM 0\n", nil, []string{"busybox linux/amd64"}},
		// Both as Docker's classic builder; BuildKit takes them for images
		// (moby/buildkit#2003).
		{"stage by name in another case", "FROM busybox AS Base\nFROM BASE\n", nil, []string{"busybox linux/amd64"}},
		{"scratch", "FROM scratch\n", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, f := mustPlan(t, tt.src, Options{BuildArgs: tt.args, Platform: v1.Platform{OS: "linux", Architecture: "amd64"}})
			if diff := cmp.Diff(tt.calls, f.calls); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTargetPlatform(t *testing.T) {
	src := "FROM --platform=$BUILDPLATFORM golang AS b\nARG TARGETARCH TARGETPLATFORM\nENV A=$TARGETARCH P=$TARGETPLATFORM O=$TARGETOS\nFROM busybox\nCOPY --from=b /a /b\n"
	p, f := mustPlan(t, src, Options{Platform: v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}})
	if diff := cmp.Diff([]string{"golang linux/amd64", "busybox linux/arm/v7"}, f.calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	env := p.Stages[0].Steps[1].Cmd.(*instructions.EnvCommand).Env
	got := fmt.Sprint(env)
	if got != "[{A arm false} {P linux/arm/v7 false} {O  false}]" {
		t.Errorf("ENV expanded to %s", got)
	}
	if p.Stages[0].Platform.Architecture != "amd64" || p.Target.Platform.Architecture != "arm" {
		t.Errorf("platforms %v %v", p.Stages[0].Platform, p.Target.Platform)
	}
}

func TestPlanErrors(t *testing.T) {
	tests := []struct {
		name, src string
		opts      Options
		line      int
		want      string
	}{
		{"undefined FROM", "FROM $UNDEF\n", Options{}, 1, `Dockerfile:1: FROM $UNDEF: base name ($UNDEF) should not be blank`},
		{"undefined platform", "FROM --platform=$NOPE busybox\n", Options{}, 1, "Dockerfile:1: FROM --platform=$NOPE busybox: empty platform value from expression $NOPE"},
		{"misspelt platform arg", "FROM --platform=$BULIDPLATFORM busybox\n", Options{}, 1, ": empty platform value from expression $BULIDPLATFORM (did you mean BUILDPLATFORM?)"},
		{"misspelt platform meta arg", "ARG MY_ARCH=amd64\nFROM --platform=linux/${MYARCH} busybox\n", Options{}, 2, `: failed to parse platform linux/${MYARCH}: "" is an invalid component of "linux/": platform specifier component must match "^[A-Za-z0-9_.-]+$": invalid argument (did you mean MY_ARCH?)`},
		{"bad platform", "FROM --platform=linux/x/y/z busybox\n", Options{}, 1, "failed to parse platform linux/x/y/z: "},
		{"unknown image", "FROM nosuch\n", Options{}, 1, "resolve image nosuch: pull access denied"},
		{"invalid image name", "ARG V\nFROM busybox:$V\n", Options{}, 2, `failed to parse stage name "busybox:": invalid reference format`},
		{"copy from misspelt stage", "FROM busybox AS builder\nFROM busybox\nCOPY --from=buidler /a /b\n", Options{}, 3, "Dockerfile:3: COPY --from=buidler /a /b: resolve image buidler: pull access denied for buidler (did you mean builder?)"},
		{"copy from later stage", "FROM busybox AS target\nCOPY --from=later /a /b\nFROM busybox AS later\nFROM target\n", Options{}, 2, `: cannot copy from stage "later", it needs to be defined before current stage "target"`},
		{"copy from later index", "FROM busybox AS a\nCOPY --from=2 /a /b\nFROM busybox\nFROM a\n", Options{}, 2, `: cannot copy from stage "2", it needs to be defined before current stage "a"`},
		{"copy from later stage of a name defined twice", "FROM busybox AS a\nFROM busybox AS b\nCOPY --from=a /a /b\nFROM busybox AS a\nFROM b\n", Options{}, 3, `cannot copy from stage "a", it needs to be defined before current stage "b"`},
		{"mount from later stage", "FROM busybox AS target\nRUN --mount=from=later,target=/x true\nFROM busybox AS later\nFROM target\n", Options{}, 2, `: cannot mount from stage "later" to "/x", stage needs to be defined before current command`},
		{"copy from self", "FROM busybox AS me\nCOPY --from=me /a /b\n", Options{}, 2, `: circular dependency detected on stage: me`},
		{"copy from self by index", "FROM busybox AS a\nFROM busybox\nCOPY --from=1 /a /b\n", Options{}, 3, `: circular dependency detected on stage: stage-1`},
		{"circle in unused stages", "FROM busybox AS a\nCOPY --from=b /a /b\nFROM busybox AS b\nRUN --mount=from=a,target=/a true\nFROM busybox\n", Options{}, 2, `: circular dependency detected on stage: a`},
		{"copy from variable", "FROM busybox\nARG S\nCOPY --from=$S /a /b\n", Options{}, 3, "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"},
		{"copy from bad index", "FROM busybox\nCOPY --from=3 /a /b\n", Options{}, 2, ": invalid stage index 3"},
		{"bad substitution", "FROM busybox\nENV A=${B:?required}\n", Options{}, 2, "required"},
		{"bad mount type via arg", "FROM busybox\nARG T=cach\nRUN --mount=type=$T,target=/c true\n", Options{}, 3, `unsupported mount type "cach"`},
		{"bad onbuild trigger", "FROM onb\n", Options{}, 1, "ONBUILD trigger"},
		{"custom path", "FROM $UNDEF\n", Options{DockerfilePath: "sub/Dockerfile.dev"}, 1, "sub/Dockerfile.dev:1: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			df, err := parser.Parse(strings.NewReader(tt.src), "Dockerfile")
			if err != nil {
				t.Fatal(err)
			}
			f := newFake()
			f.images["onb"] = v1.Config{OnBuild: []string{"FROM x"}}
			tt.opts.ResolveImage = f.resolve
			_, err = New(t.Context(), df, tt.opts)
			var pe *parser.Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *parser.Error", err)
			}
			if pe.Line != tt.line {
				t.Errorf("line = %d, want %d (%v)", pe.Line, tt.line, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func mustParse(t *testing.T, src string) *parser.Dockerfile {
	t.Helper()
	df, err := parser.Parse(strings.NewReader(src), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	return df
}

// fromOf is the source a step's COPY --from reads (zero: the build context).
func fromOf(s *Step) Source {
	if s.From == nil {
		return Source{}
	}
	return *s.From
}
