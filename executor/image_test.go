package executor

import (
	"fmt"
	"testing"
	"time"

	"github.com/builder-dev/builder/planner"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Layers without a history entry (a named local context's files) get
// BuildKit's exporter entries, appended, describing the last layers.
func TestHistoryForLayers(t *testing.T) {
	t0 := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	epoch := time.Unix(0, 0).UTC()
	layers := []layerRef{
		{diffID: "ctx", desc: "local source for foo", created: t0},
		{diffID: "copy", desc: "[b 1/2] COPY / /", created: t0.Add(time.Second)},
		{diffID: "run", desc: "mount / from exec /bin/sh -c true", created: t0.Add(2 * time.Second)},
	}
	hist := []ocispec.History{{CreatedBy: "COPY / / # buildkit"}, {CreatedBy: "ENV A=1", EmptyLayer: true}, {CreatedBy: "RUN /bin/sh -c true # buildkit"}}
	tests := []struct {
		name   string
		hist   []ocispec.History
		layers []layerRef
		epoch  *time.Time
		want   []string // created_by of the entries after hist
		when   []time.Time
	}{
		{name: "every layer has an entry", hist: hist, layers: layers[1:]},
		{name: "one layer without", hist: hist, layers: layers, want: []string{"mount / from exec /bin/sh -c true"}, when: []time.Time{t0.Add(2 * time.Second)}},
		{name: "with an epoch", hist: hist, layers: layers, epoch: &epoch, want: []string{"mount / from exec /bin/sh -c true"}, when: []time.Time{epoch}},
		{name: "no description", hist: nil, layers: []layerRef{{diffID: "x", created: t0}}, want: []string{"created by buildkit"}, when: []time.Time{t0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := historyForLayers(tt.hist, tt.layers, tt.epoch)
			if len(got) != len(tt.hist)+len(tt.want) {
				t.Fatalf("%d entries, want %d", len(got), len(tt.hist)+len(tt.want))
			}
			for i, w := range tt.want {
				h := got[len(tt.hist)+i]
				if h.CreatedBy != w || h.Comment != "buildkit.exporter.image.v0" || h.EmptyLayer || h.Created == nil || !h.Created.Equal(tt.when[i]) {
					t.Errorf("entry %d: %+v, want %q created %s with the exporter's comment", i, h, w, tt.when[i])
				}
			}
		})
	}
}

// TestFillHistoryTimes: entries without a time get BuildKit's exporter's:
// the first ones the next entry's time (a stage's first new layer), the
// later ones the entry's before them; none when no entry has a time.
func TestFillHistoryTimes(t *testing.T) {
	t1 := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	t2, t3 := t1.Add(time.Minute), t1.Add(2*time.Minute)
	at := func(tm time.Time) *time.Time { return &tm }
	tests := []struct {
		name string
		in   []*time.Time
		want []*time.Time
	}{
		{"all set", []*time.Time{at(t1), at(t2)}, []*time.Time{at(t1), at(t2)}},
		{"scratch, metadata only", []*time.Time{nil, nil}, []*time.Time{nil, nil}},
		{"scratch, metadata before the first layer", []*time.Time{nil, at(t2), nil}, []*time.Time{at(t2), at(t2), at(t2)}},
		{"after the base, before the first layer", []*time.Time{at(t1), nil, at(t3)}, []*time.Time{at(t1), at(t3), at(t3)}},
		{"after the base, no new layer", []*time.Time{at(t1), at(t2), nil}, []*time.Time{at(t1), at(t2), at(t2)}},
		{"later ones take the entry before", []*time.Time{at(t1), nil, at(t2), nil, at(t3), nil}, []*time.Time{at(t1), at(t2), at(t2), at(t2), at(t3), at(t3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hist := make([]ocispec.History, len(tt.in))
			for i, c := range tt.in {
				hist[i] = ocispec.History{CreatedBy: fmt.Sprint(i), Created: c}
			}
			got := fillHistoryTimes(hist)
			for i, w := range tt.want {
				g := got[i].Created
				if (g == nil) != (w == nil) || (g != nil && !g.Equal(*w)) {
					t.Errorf("entry %d: created %v, want %v", i, g, w)
				}
				if (hist[i].Created == nil) != (tt.in[i] == nil) {
					t.Errorf("entry %d: the input was changed", i)
				}
			}
		})
	}
}

// TestStageHistoryTimes: a step's history entry has its layer's time, the
// epoch's when one is set, and no time of its own when it adds no layer.
func TestStageHistoryTimes(t *testing.T) {
	t1 := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	epoch := time.Unix(1700000000, 0).UTC()
	tests := []struct {
		name  string
		epoch *time.Time
		empty bool
		want  *time.Time
	}{
		{"layer", nil, false, &t1},
		{"metadata", nil, true, nil},
		{"metadata with an epoch", &epoch, true, &epoch},
		{"layer with an epoch", &epoch, false, &epoch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &stageState{epoch: tt.epoch}
			s.history("STEP", tt.empty, t1)
			g := s.img.History[0].Created
			if (g == nil) != (tt.want == nil) || (g != nil && !g.Equal(*tt.want)) {
				t.Errorf("created %v, want %v", g, tt.want)
			}
		})
	}
}

// TestPulledName: the reference BuildKit describes a pulled base image
// layer by ("pulled from ..."), for a FROM image and both kinds of named
// image context.
func TestPulledName(t *testing.T) {
	const d, idx = "sha256:1111111111111111111111111111111111111111111111111111111111111111", "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	tests := []struct {
		name string
		st   planner.Stage
		want string
	}{
		{"FROM a tag", planner.Stage{Base: planner.Source{Image: &planner.ImageInfo{Ref: "busybox", Digest: d}}},
			"docker.io/library/busybox:latest@" + d},
		{"FROM an index", planner.Stage{Base: planner.Source{Image: &planner.ImageInfo{Ref: "reg.io/x/app:1", Digest: d, Index: idx}}},
			"reg.io/x/app:1@" + idx},
		{"FROM a digest", planner.Stage{Base: planner.Source{Image: &planner.ImageInfo{Ref: "busybox@" + idx, Digest: d}}},
			"docker.io/library/busybox@" + idx},
		{"docker-image:// context", planner.Stage{Base: planner.Source{Image: &planner.ImageInfo{Ref: "alpine:3", Digest: d}},
			ImageContext: &planner.NamedContext{Name: "base", Image: "alpine:3"}}, "docker.io/library/alpine:3"},
		{"oci-layout:// context with a digest", planner.Stage{Base: planner.Source{Image: &planner.ImageInfo{Ref: d, Digest: d}},
			ImageContext: &planner.NamedContext{Name: "base", Layout: "/l@" + idx, Image: d}}, "docker.io/library/base@" + idx},
		{"oci-layout:// context with a tag", planner.Stage{Base: planner.Source{Image: &planner.ImageInfo{Ref: d, Digest: d}},
			ImageContext: &planner.NamedContext{Name: "my/base", Layout: "/l:v1", Image: d}}, "docker.io/my/base@" + d},
	}
	for _, tt := range tests {
		if got := pulledName(&tt.st); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestFromEventName: the progress line of a stage's FROM names the image
// as BuildKit does: a FROM image resolved and pinned, an oci-layout://
// context (stored by digest alone) after the context's name, pinned to
// the layout's digest — not the digest read as a repository name.
func TestFromEventName(t *testing.T) {
	const d = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	b := &build{e: New(Options{})}
	for _, tt := range []struct {
		st   planner.Stage
		want string
	}{
		{planner.Stage{Base: planner.Source{Image: &planner.ImageInfo{Ref: "busybox", Digest: d}}}, "FROM docker.io/library/busybox:latest@" + d},
		{planner.Stage{Base: planner.Source{Image: &planner.ImageInfo{Ref: d, Digest: d}},
			ImageContext: &planner.NamedContext{Name: "base", Layout: "/l@" + d, Image: d}}, "FROM docker.io/library/base@" + d},
	} {
		if got := b.fromEvent(&tt.st).Instruction; got != tt.want {
			t.Errorf("%q, want %q", got, tt.want)
		}
	}
}
