package executor

import (
	"context"
	"strings"
	"testing"

	"github.com/builder-dev/builder/parser"
	"github.com/builder-dev/builder/planner"
	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestStageLabels: step prefixes as BuildKit's progress prints them
// (dockerfile2llb prefixCommand): FROM an image counts, FROM scratch or a
// stage does not; RUN, COPY, ADD and WORKDIR count; named stages carry
// their name; numbers are padded to the total's width.
func TestStageLabels(t *testing.T) {
	src := `FROM busybox AS base
ENV A=1
RUN one
COPY a /a
FROM base
WORKDIR /w
LABEL x=y
FROM scratch
ADD b /b
RUN 1
RUN 2
RUN 3
RUN 4
RUN 5
RUN 6
RUN 7
RUN 8
RUN 9
`
	df, err := parser.Parse(strings.NewReader(src), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	resolve := func(_ context.Context, ref string, _ v1.Platform) (*planner.ImageInfo, error) {
		return &planner.ImageInfo{Ref: ref, Digest: "sha256:" + strings.Repeat("a", 64), Config: &v1.ConfigFile{}}, nil
	}
	plat := v1.Platform{OS: "linux", Architecture: "amd64"}
	p, err := planner.New(t.Context(), df, planner.Options{ResolveImage: resolve, BuildPlatform: plat, Target: "base"})
	if err != nil {
		t.Fatal(err)
	}
	from, steps := stageLabels(p.Stages[0], namesStages(p), false)
	if diff := cmp.Diff([]string{"[base 1/3]", "[base]", "[base 2/3]", "[base 3/3]"}, append([]string{from}, steps...)); diff != "" {
		t.Errorf("named stage (-want +got):\n%s", diff)
	}
	all, err := planner.New(t.Context(), df, planner.Options{ResolveImage: resolve, BuildPlatform: plat})
	if err != nil {
		t.Fatal(err)
	}
	last := all.Stages[len(all.Stages)-1]
	from, steps = stageLabels(last, namesStages(all), false)
	if from != "" || steps[0] != "[stage-2  1/10]" || steps[9] != "[stage-2 10/10]" {
		t.Errorf("FROM scratch with 10 steps: from %q, steps %q", from, steps)
	}
	one, err := parser.Parse(strings.NewReader("FROM busybox\nRUN a\n"), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	single, err := planner.New(t.Context(), one, planner.Options{ResolveImage: resolve, BuildPlatform: plat})
	if err != nil {
		t.Fatal(err)
	}
	if from, steps := stageLabels(single.Stages[0], namesStages(single), false); from != "[1/2]" || steps[0] != "[2/2]" {
		t.Errorf("single stage: %q %q, want [1/2] [2/2]", from, steps)
	}
	// Several platforms: each label names the stage's platform first.
	if from, steps := stageLabels(single.Stages[0], namesStages(single), true); from != "[linux/amd64 1/2]" || steps[0] != "[linux/amd64 2/2]" {
		t.Errorf("single stage, multi-platform: %q %q, want [linux/amd64 1/2] [linux/amd64 2/2]", from, steps)
	}
}

// TestStageLabelsWithoutVertex: a WORKDIR that resolves to "/" counts in
// the total but takes no number (BuildKit makes no vertex for it), and
// every inherited ONBUILD trigger counts in the total.
func TestStageLabelsWithoutVertex(t *testing.T) {
	resolve := func(_ context.Context, ref string, _ v1.Platform) (*planner.ImageInfo, error) {
		cfg := &v1.ConfigFile{}
		if ref == "onb" {
			cfg.Config.OnBuild = []string{"ENV A=1", "RUN x"}
			cfg.Config.WorkingDir = "/w"
		}
		return &planner.ImageInfo{Ref: ref, Digest: "sha256:" + strings.Repeat("a", 64), Config: cfg}, nil
	}
	tests := []struct {
		src  string
		want []string // FROM's label, then each step's
	}{
		{"FROM scratch\nWORKDIR /\nCOPY a /d\nWORKDIR /x\nWORKDIR ..\nCOPY a /e\n", []string{"", "", "[1/5]", "[2/5]", "", "[3/5]"}},
		{"FROM onb\nWORKDIR ..\nRUN y\n", []string{"[1/5]", "", "[2/5]", "", "[3/5]"}},
	}
	for _, tt := range tests {
		df, err := parser.Parse(strings.NewReader(tt.src), "Dockerfile")
		if err != nil {
			t.Fatal(err)
		}
		p, err := planner.New(t.Context(), df, planner.Options{ResolveImage: resolve, BuildPlatform: v1.Platform{OS: "linux", Architecture: "amd64"}})
		if err != nil {
			t.Fatal(err)
		}
		from, steps := stageLabels(p.Target, namesStages(p), false)
		if diff := cmp.Diff(tt.want, append([]string{from}, steps...)); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tt.src, diff)
		}
	}
}

// The FROM of an image shows the image it resolved, as BuildKit names it.
func TestResolvedName(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	for _, tt := range []struct{ ref, want string }{
		{"busybox", "docker.io/library/busybox:latest@" + d},
		{"busybox:fixture", "docker.io/library/busybox:fixture@" + d},
		{"127.0.0.1:5000/team/app:v1", "127.0.0.1:5000/team/app:v1@" + d},
		{"alpine@" + d, "docker.io/library/alpine@" + d},
	} {
		if got := resolvedName(tt.ref, d); got != tt.want {
			t.Errorf("resolvedName(%q) = %q, want %q", tt.ref, got, tt.want)
		}
	}
}

// TestStageLabelsAsBuildKitStates: a single stage is named "stage-0" when
// a COPY --from or RUN --mount from= reads an image or a named context
// (BuildKit dispatches each as a state of its own), not when it reads a
// stage; the FROM of a named context counts in the total but takes no
// number (BuildKit loads it under the context's own name).
func TestStageLabelsAsBuildKitStates(t *testing.T) {
	resolve := func(_ context.Context, ref string, _ v1.Platform) (*planner.ImageInfo, error) {
		return &planner.ImageInfo{Ref: ref, Digest: "sha256:" + strings.Repeat("a", 64), Config: &v1.ConfigFile{}}, nil
	}
	contexts := []planner.NamedContext{{Name: "dir", Dir: "/ctx"}, {Name: "img", Image: "busybox"}}
	tests := []struct {
		src  string
		want []string // the target's FROM label, then each step's
	}{
		{"FROM busybox\nCOPY --from=busybox /a /a\n", []string{"[stage-0 1/2]", "[stage-0 2/2]"}},
		{"FROM busybox\nRUN --mount=from=alpine,target=/m x\n", []string{"[stage-0 1/2]", "[stage-0 2/2]"}},
		{"FROM busybox\nCOPY --from=dir /a /a\n", []string{"[stage-0 1/2]", "[stage-0 2/2]"}},
		{"FROM busybox\nCOPY /a /a\n", []string{"[1/2]", "[2/2]"}},
		{"FROM busybox AS only\nCOPY /a /a\n", []string{"[1/2]", "[2/2]"}},
		{"FROM busybox AS only\nCOPY --from=img /a /a\n", []string{"[only 1/2]", "[only 2/2]"}},
		{"FROM dir\nCOPY /a /a\nCOPY /b /b\n", []string{"", "[1/3]", "[2/3]"}},
		{"FROM img\nCOPY /a /a\n", []string{"", "[1/2]"}},
		{"FROM dir\nCOPY --from=img /a /a\n", []string{"", "[stage-0 1/2]"}},
	}
	for _, tt := range tests {
		df, err := parser.Parse(strings.NewReader(tt.src), "Dockerfile")
		if err != nil {
			t.Fatal(err)
		}
		p, err := planner.New(t.Context(), df, planner.Options{ResolveImage: resolve, Contexts: contexts,
			BuildPlatform: v1.Platform{OS: "linux", Architecture: "amd64"}})
		if err != nil {
			t.Fatal(err)
		}
		from, steps := stageLabels(p.Target, namesStages(p), false)
		if diff := cmp.Diff(tt.want, append([]string{from}, steps...)); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tt.src, diff)
		}
	}
}
