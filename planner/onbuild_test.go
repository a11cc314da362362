package planner

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

func TestOnBuildFromImage(t *testing.T) {
	src := "FROM alpine AS helper\nRUN make\nFROM busybox AS unused\nFROM app\nENV Z=1\nRUN true\n"
	df := mustParse(t, src)
	f := newFake()
	f.images["app"] = v1.Config{Env: []string{"D=/srv"}, OnBuild: []string{"WORKDIR $D", "COPY --from=helper /out /app"}}
	p, err := New(t.Context(), df, Options{ResolveImage: f.resolve})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"0:helper", "2:"}, stageNames(p)); diff != "" {
		t.Errorf("trigger COPY --from=helper must pull in the helper stage (-want +got):\n%s", diff)
	}
	steps := p.Target.Steps
	if len(steps) != 4 || !steps[0].OnBuild || !steps[1].OnBuild || steps[2].OnBuild {
		t.Fatalf("steps: %d, OnBuild flags wrong", len(steps))
	}
	for _, s := range steps[:2] {
		if s.Line != 4 || s.EndLine != 4 {
			t.Errorf("trigger line %d-%d, want the FROM line 4", s.Line, s.EndLine)
		}
	}
	if got := expanded(steps[0]); got != "WORKDIR /srv" || steps[0].Text != "WORKDIR $D" {
		t.Errorf("trigger 0: %s (text %q)", got, steps[0].Text)
	}
	if fromOf(steps[1]).Stage != p.Stages[0] || !slices.Equal(p.Target.DependsOn, []int{0}) {
		t.Errorf("trigger COPY --from: stage %v deps %v", fromOf(steps[1]).Stage, p.Target.DependsOn)
	}
}

func TestOnBuildFromStage(t *testing.T) {
	src := `FROM busybox AS base
ONBUILD ENV TRIGGERED=yes
ONBUILD RUN echo $TRIGGERED
FROM base AS child
RUN true
FROM child AS grandchild
RUN true
`
	p, _ := mustPlan(t, src, Options{Target: "child"})
	child := p.Target
	if len(child.Steps) != 3 || !child.Steps[0].OnBuild || !child.Steps[1].OnBuild {
		t.Fatalf("child steps %d", len(child.Steps))
	}
	if got := expanded(child.Steps[0]); got != "ENV TRIGGERED=yes" {
		t.Errorf("got %s", got)
	}
	if diff := cmp.Diff("TRIGGERED=yes", child.Steps[2].Env[len(child.Steps[2].Env)-1]); diff != "" {
		t.Errorf("trigger ENV not applied: %s", diff)
	}
	p, _ = mustPlan(t, src, Options{})
	for _, s := range p.Target.Steps {
		if s.OnBuild {
			t.Errorf("grandchild got trigger %s", s.Text)
		}
	}
	base := p.Stages[0]
	if _, ok := base.Steps[0].Cmd.(*instructions.OnbuildCommand); !ok || base.Steps[0].OnBuild {
		t.Errorf("base stage keeps its ONBUILD instructions as plain steps")
	}
}

func TestRunMountFrom(t *testing.T) {
	src := "FROM golang AS build\nRUN go build\nFROM busybox\nRUN --mount=from=build,source=/out,target=/in --mount=type=bind,from=alpine,target=/a ls /in\n"
	p, f := mustPlan(t, src, Options{})
	run := p.Target.Steps[0]
	if run.MountFrom["build"].Stage != p.Stages[0] || run.MountFrom["alpine"].Image == nil {
		t.Errorf("MountFrom %v", run.MountFrom)
	}
	if !slices.Equal(p.Target.DependsOn, []int{0}) {
		t.Errorf("deps %v", p.Target.DependsOn)
	}
	if diff := cmp.Diff([]string{"golang linux/amd64", "busybox linux/amd64", "alpine linux/amd64"}, f.calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestCopyFromIndexAndImage(t *testing.T) {
	src := "FROM golang\nRUN go build\nFROM busybox\nCOPY --from=0 /out /app\nCOPY --from=alpine /etc/os-release /\n"
	p, _ := mustPlan(t, src, Options{})
	if fromOf(p.Target.Steps[0]).Stage != p.Stages[0] {
		t.Errorf("COPY --from=0 not linked to stage 0")
	}
	if img := fromOf(p.Target.Steps[1]).Image; img == nil || img.Ref != "alpine" {
		t.Errorf("COPY --from=alpine image %v", img)
	}
}

func TestStepText(t *testing.T) {
	src := "FROM busybox\nRUN echo a \\\n    b\nCOPY <<EOF /x\nhi\nEOF\n"
	p, _ := mustPlan(t, src, Options{})
	want := []struct {
		line, end int
		text      string
	}{{2, 3, "RUN echo a \\\n    b"}, {4, 6, "COPY <<EOF /x\nhi\nEOF"}}
	for i, w := range want {
		s := p.Target.Steps[i]
		if s.Line != w.line || s.EndLine != w.end || s.Text != w.text {
			t.Errorf("step %d: %d-%d %q, want %d-%d %q", i, s.Line, s.EndLine, s.Text, w.line, w.end, w.text)
		}
	}
	if p.Target.Line != 1 || p.Target.Text != "FROM busybox" {
		t.Errorf("stage line %d text %q", p.Target.Line, p.Target.Text)
	}
}
