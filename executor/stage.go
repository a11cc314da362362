package executor

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/planner"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// stageState is a stage's image as it evolves step by step.
type stageState struct {
	img    dockerspec.DockerOCIImage
	layers []layerRef
	key    cache.Key
	// created is the time of the newest history entry: metadata steps take
	// it so a fully cached rebuild yields the same image digest.
	created time.Time
	// epoch, when set (SOURCE_DATE_EPOCH), is the time of every history
	// entry this build adds, as BuildKit's frontend writes it.
	epoch *time.Time
	// parentReason says why this stage's chain differs from the previous
	// build's, for explaining misses of steps whose own inputs are equal.
	// Until parentKnown it is computed on demand from the stage's FROM.
	parentReason string
	parentKnown  bool
	from         *planner.Stage
	fromInputs   *cache.Inputs
	// args are the ARG definitions dispatched so far (for history text).
	args []instructions.KeyValuePairOptional
	// hist[i] is the step that made img.History[i] (stage -1: the base image).
	hist []stepRef
	// cmdSet is true once the stage itself set CMD.
	cmdSet bool
	// cur is the step being dispatched.
	cur stepRef
	// envPos indexes img.Config.Env by key once an ENV ran (applyEnv).
	envPos map[string]int
	// labels are the progress labels of this stage's steps ("[2/5]"),
	// set by runStage.
	labels []string
}

// stepRef names a step of the plan: stage index and step index.
type stepRef struct{ stage, step int }

// layerRef is one layer of a stage's image.
type layerRef struct {
	diffID string
	size   int64
	layer  v1.Layer
	// desc and created are BuildKit's description of the layer's snapshot
	// and its creation time, for a layer without a history entry.
	desc    string
	created time.Time
}

func (s *stageState) parents() []string {
	ids := make([]string, len(s.layers))
	for i, l := range s.layers {
		ids[i] = l.diffID
	}
	return ids
}

func (s *stageState) clone() *stageState {
	c := *s
	c.layers = slices.Clone(s.layers)
	c.hist = slices.Clone(s.hist)
	c.args = nil
	c.cmdSet = false
	c.labels = nil // the child stage's own steps: computed by its first step
	raw, _ := json.Marshal(s.img)
	c.img = dockerspec.DockerOCIImage{}
	_ = json.Unmarshal(raw, &c.img) // round trip of our own value cannot fail
	return &c
}

func stageName(st *planner.Stage) string {
	if st.Name != "" {
		return st.Name
	}
	return "stage-" + strconv.Itoa(st.Index)
}

// runStage builds one stage once the stages it depends on are done.
func (b *build) runStage(ctx context.Context, st *planner.Stage) (err error) {
	f := b.results[st.Index]
	defer func() {
		f.err = err
		if err != nil {
			b.fail(err)
		}
		close(f.done)
	}()
	s, err := b.stageBase(ctx, st)
	if err != nil {
		return &StepError{Path: b.e.opts.DockerfilePath, Stage: stageName(st), Line: st.Line, Instruction: st.Text, Err: err}
	}
	// Computed once per stage: a stage of N steps costs O(N).
	_, s.labels = stageLabels(st, b.plan.StageCount, b.e.opts.MultiPlatform)
	for i, step := range st.Steps {
		if err := b.runStep(ctx, st, s, i, step); err != nil {
			return err
		}
	}
	f.res = s
	return nil
}

// stageBase returns the state a stage starts from and records its FROM.
func (b *build) stageBase(ctx context.Context, st *planner.Stage) (*stageState, error) {
	in := cache.Inputs{Op: "FROM", Fields: []cache.Field{{Name: "platform", Value: planner.FormatPlatform(st.Platform)}}}
	var s *stageState
	switch {
	case st.Base.Stage != nil:
		parent, err := b.wait(ctx, st.Base.Stage.Index)
		if err != nil {
			return nil, err
		}
		s = parent.clone()
		in.Fields = append(in.Fields, cache.Field{Name: "base.stage", Value: parent.key.String()})
	case st.Base.Image != nil:
		ev := b.fromEvent(st)
		b.e.opts.Progress.Event(ev)
		var err error
		s, err = b.imageState(ctx, st.Base.Image.Digest)
		if err != nil {
			err = fmt.Errorf("base image %s: %w", st.Base.Image.Ref, err)
		}
		ev.Kind, ev.Cache, ev.Err = StepDone, "hit", err
		b.e.opts.Progress.Event(ev)
		if err != nil {
			return nil, err
		}
		in.Fields = append(in.Fields, cache.Field{Name: "base.digest", Value: st.Base.Image.Digest})
	case st.Base.Context != nil:
		s = contextImage(st)
		in.Fields = append(in.Fields, cache.Field{Name: "base.context", Value: st.Base.Context.Name})
	default:
		s = &stageState{img: emptyImage(st.Platform)}
		in.Fields = append(in.Fields, cache.Field{Name: "base", Value: "scratch"})
	}
	s.img.Config.OnBuild = nil
	s.img.Created = nil
	s.epoch = b.e.opts.SourceDateEpoch
	s.key = cache.KeyOf(cache.Key{}, in)
	s.parentReason, s.parentKnown, s.from, s.fromInputs = "", false, st, &in
	rec := cache.StepRecord{
		Stage: stageName(st), Line: st.Line, Instruction: st.Text, Name: b.fromEvent(st).Title(),
		Key: s.key, Inputs: &in, Cache: "hit",
	}
	if st.Base.Context != nil {
		if err := b.contextLayer(ctx, st, s, &rec); err != nil {
			return nil, err
		}
	}
	b.addStep(st.Index, -1, rec)
	return s, nil
}

// fromEvent is the progress event of a stage's FROM: BuildKit shows the
// FROM of an image as the stage's first step.
func (b *build) fromEvent(st *planner.Stage) Event {
	ev := Event{Stage: stageName(st), Line: st.Line, Instruction: st.Text}
	if st.Base.Image != nil {
		ev.Label, _ = stageLabels(st, b.plan.StageCount, b.e.opts.MultiPlatform)
		ev.Instruction = "FROM " + st.Base.Image.Ref
	}
	return ev
}

func emptyImage(p v1.Platform) dockerspec.DockerOCIImage {
	img := dockerspec.DockerOCIImage{}
	img.OS = p.OS
	img.Architecture = p.Architecture
	img.Variant = p.Variant
	img.RootFS.Type = "layers"
	img.Config.WorkingDir = "/"
	img.Config.Env = []string{"PATH=" + planner.DefaultPath}
	return img
}

// imageState loads an image from the store as a stage's starting point and
// makes sure its layers are unpacked for snapshots.
func (b *build) imageState(ctx context.Context, ref string) (*stageState, error) {
	// The image's layers are read again at export, after Run returned and
	// its context was cancelled: don't bind them to it.
	img, err := b.e.opts.Images.Image(context.WithoutCancel(ctx), ref)
	if err != nil {
		return nil, err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	s := &stageState{}
	if err := json.Unmarshal(raw, &s.img); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("read layers: %w", err)
	}
	for _, l := range layers {
		ref, err := b.ensureUnpacked(ctx, l)
		if err != nil {
			return nil, err
		}
		s.layers = append(s.layers, ref)
	}
	if s.img.Created != nil {
		s.created = *s.img.Created
	}
	s.hist = make([]stepRef, len(s.img.History))
	for i := range s.hist {
		s.hist[i] = stepRef{-1, -1}
	}
	for _, h := range s.img.History {
		if h.Created != nil && h.Created.After(s.created) {
			s.created = *h.Created
		}
	}
	return s, nil
}

// remoteBacked is a layer whose bytes are still in a registry.
type remoteBacked interface{ RemoteBacked() bool }

// ensureUnpacked makes sure layer l has a directory in the layer store, or
// can get one when a snapshot needs it (a remote-backed layer).
func (b *build) ensureUnpacked(ctx context.Context, l v1.Layer) (layerRef, error) {
	d, err := l.DiffID()
	if err != nil {
		return layerRef{}, fmt.Errorf("layer diffID: %w", err)
	}
	size, err := l.Size()
	if err != nil {
		return layerRef{}, fmt.Errorf("layer %s size: %w", d, err)
	}
	ref := layerRef{diffID: d.String(), size: size, layer: l}
	if b.e.opts.Layers.Has(ref.diffID) {
		return ref, nil
	}
	if rb, ok := l.(remoteBacked); ok && rb.RemoteBacked() {
		// A lazily pulled base layer: the layer store fetches it when a
		// step runs over it; a fully cached build never does.
		return ref, nil
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return layerRef{}, fmt.Errorf("open layer %s: %w", d, err)
	}
	defer rc.Close()
	if _, err := b.e.opts.Layers.Unpack(ctx, ref.diffID, rc); err != nil {
		return layerRef{}, fmt.Errorf("unpack layer %s: %w", d, err)
	}
	return ref, nil
}

// history appends a history entry for a finished step.
func (s *stageState) history(createdBy string, empty bool, created time.Time) {
	if created.After(s.created) {
		s.created = created
	}
	t := s.created
	if s.epoch != nil {
		t = *s.epoch
	}
	s.hist = append(s.hist, s.cur)
	s.img.History = append(s.img.History, ocispec.History{
		Created:    &t,
		CreatedBy:  createdBy,
		Comment:    "buildkit.dockerfile.v0",
		EmptyLayer: empty,
	})
}
