package executor

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	godigest "github.com/opencontainers/go-digest"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/planner"
	"github.com/builder-dev/builder/snapshot"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// stageState is a stage's image as it evolves step by step.
type stageState struct {
	img    dockerspec.DockerOCIImage
	layers []layerRef
	// key is the input key of the last step; ctKey the same step's key
	// on the content chain: where a step read another stage, keyed by
	// the files it read (ct), and every later step keyed on that.
	key, ctKey cache.Key
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
	// windows: the stage starts from a Windows base image, so that a
	// step's layer is in the Windows layer format, as BuildKit writes it
	// (windowsFormat).
	windows bool
	// cmdSet is true once the stage itself set CMD.
	cmdSet bool
	// cur is the step being dispatched.
	cur stepRef
	// envPos indexes img.Config.Env by key once an ENV ran (applyEnv).
	envPos map[string]int
	// labels are the progress labels of this stage's steps ("[2/5]"),
	// set by runStage.
	labels []string
	// context is the layer of a named directory context a stage starts
	// FROM, keyed by the keys pass and added by the build pass.
	context *contextBase
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
	// image: a base image's layer, unpacked into the layer store only
	// when a snapshot first needs it (ensureLayers).
	image bool
	// windows: the layer is in the Windows layer format, its files below
	// Files/: a Windows base image's, or made by a step on one.
	windows bool
}

// layersOptions are the options of a snapshot of layers: which of them
// are in the Windows layer format, if any.
func layersOptions(layers []layerRef) []snapshot.PrepareOption {
	which := windowsLayers(layers)
	if which == nil {
		return nil
	}
	return []snapshot.PrepareOption{snapshot.WithWindowsLayers(which)}
}

// windowsLayers reports which of layers are in the Windows layer format;
// nil when none is.
func windowsLayers(layers []layerRef) []bool {
	if !slices.ContainsFunc(layers, func(l layerRef) bool { return l.windows }) {
		return nil
	}
	which := make([]bool, len(layers))
	for i, l := range layers {
		which[i] = l.windows
	}
	return which
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

// runStage builds one stage (the build pass), from its keys.
func (b *build) runStage(ctx context.Context, st *planner.Stage) (err error) {
	sr := b.stages[st.Index]
	defer func() {
		sr.err = err
		if err != nil {
			b.fail(err)
		}
		close(sr.done)
	}()
	sk, err := b.stageKeys(ctx, st.Index)
	if err != nil {
		return err
	}
	s, err := b.stageBase(ctx, st, sk)
	if err != nil {
		return &StepError{Path: b.e.opts.DockerfilePath, Stage: stageName(st), Line: st.Line, Instruction: st.Text, Err: err}
	}
	s.labels = sk.labels
	b.prefetch(ctx, st, sk)
	for i, step := range st.Steps {
		if err := b.runStep(ctx, st, s, i, step, sk.steps[i]); err != nil {
			return err
		}
	}
	sr.res = s
	return nil
}

// keyBase returns the state a stage starts from in the keys pass, with
// its FROM inputs: an earlier stage's keyed state, an image's config (its
// layers unpacked only when a step runs on them), or scratch.
func (b *build) keyBase(ctx context.Context, st *planner.Stage) (*stageState, cache.Inputs, error) {
	in := cache.Inputs{Op: "FROM", Fields: []cache.Field{{Name: "platform", Value: planner.FormatPlatform(st.Platform)}}}
	var s *stageState
	switch {
	case st.Base.Stage != nil:
		parent, err := b.stageKeys(ctx, st.Base.Stage.Index)
		if err != nil {
			return nil, in, err
		}
		s = parent.state.clone()
		in.Fields = append(in.Fields, cache.Field{Name: "base.stage", Value: parent.state.key.String()})
	case st.Base.Image != nil:
		var err error
		s, err = b.imageState(ctx, st.Base.Image.Digest)
		if err != nil {
			return nil, in, fmt.Errorf("base image %s: %w", st.Base.Image.Ref, err)
		}
		in.Fields = append(in.Fields, cache.Field{Name: "base.digest", Value: st.Base.Image.Digest})
		if err := b.describePulled(st, s); err != nil {
			return nil, in, fmt.Errorf("base image %s: %w", st.Base.Image.Ref, err)
		}
		// BuildKit gives every stage's image a PATH (the default) when its
		// base image has none, Windows' aside.
		if st.Platform.OS != "windows" && !isEnvKey(s.img.Config.Env, "PATH") {
			s.img.Config.Env = append(s.img.Config.Env, "PATH="+planner.DefaultPath)
		}
		if s.img.Config.WorkingDir, err = baseImageWorkdir(s.img.Config.WorkingDir, st.Platform.OS); err != nil {
			return nil, in, fmt.Errorf("base image %s: %w", st.Base.Image.Ref, err)
		}
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
	s.ctKey = s.key
	if st.Base.Context != nil {
		if err := b.keyContext(ctx, st, s); err != nil {
			return nil, in, err
		}
	}
	return s, in, nil
}

// stageBase returns the state a stage starts from in the build pass and
// records its FROM: an earlier stage's result (built first), or the state
// the keys pass started from.
func (b *build) stageBase(ctx context.Context, st *planner.Stage, sk *stageKeys) (*stageState, error) {
	var s *stageState
	ct := sk.rootKey
	switch {
	case st.Base.Stage != nil:
		parent, err := b.result(ctx, st.Base.Stage.Index)
		if err != nil {
			return nil, err
		}
		s = parent.clone()
		if parent.ctKey != parent.key {
			in := sk.from
			in.Fields = slices.Clone(in.Fields)
			for i, f := range in.Fields {
				if f.Name == "base.stage" {
					in.Fields[i].Value = parent.ctKey.String()
				}
			}
			ct = cache.KeyOf(cache.Key{}, in)
		}
	case st.Base.Image != nil:
		// The image was resolved by the planner and read by the keys
		// pass: the FROM step of progress is done at once.
		ev := b.fromEvent(st)
		b.e.opts.Progress.Event(ev)
		ev.Kind, ev.Cache = StepDone, "hit"
		b.e.opts.Progress.Event(ev)
		s = sk.base.clone()
	default:
		s = sk.base.clone()
	}
	s.img.Config.OnBuild = nil
	s.img.Created = nil
	s.epoch = b.e.opts.SourceDateEpoch
	s.key, s.ctKey = sk.rootKey, ct
	in := sk.from
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
// FROM of an image as the stage's first step, naming the image it
// resolved ("FROM docker.io/library/busybox:latest@sha256:...").
func (b *build) fromEvent(st *planner.Stage) Event {
	ev := Event{Stage: stageName(st), Line: st.Line, Instruction: st.Text}
	if st.Base.Image != nil {
		ev.Label, _ = stageLabels(st, b.namesStages, b.e.opts.MultiPlatform)
		name := resolvedName(st.Base.Image.Ref, st.Base.Image.Resolved())
		if nc := st.ImageContext; nc != nil && nc.Layout != "" {
			// Stored by digest alone: named after the context, as
			// BuildKit names it (docker.io/library/base@sha256:…).
			name = pulledName(st)
		}
		ev.Instruction = "FROM " + name
	}
	return ev
}

// resolvedName is ref normalized as Docker names it, pinned to digest.
func resolvedName(ref, digest string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ref + "@" + digest
	}
	return pinned(reference.TagNameOnly(named), digest)
}

// pinned is named pinned to digest, unless it is pinned already.
func pinned(named reference.Named, digest string) string {
	if _, ok := named.(reference.Digested); ok {
		return named.String()
	}
	d, err := godigest.Parse(digest)
	if err != nil {
		return named.String()
	}
	if p, err := reference.WithDigest(named, d); err == nil {
		return p.String()
	}
	return named.String()
}

func emptyImage(p v1.Platform) dockerspec.DockerOCIImage {
	img := dockerspec.DockerOCIImage{}
	img.OS = p.OS
	img.Architecture = p.Architecture
	img.Variant = p.Variant
	img.RootFS.Type = "layers"
	img.Config.WorkingDir = "/"
	// BuildKit sets no PATH for Windows (moby/buildkit#5445), and writes
	// a Windows image's working directory with backslashes.
	if p.OS == "windows" {
		img.Config.WorkingDir = `\`
	} else {
		img.Config.Env = []string{"PATH=" + planner.DefaultPath}
	}
	return img
}

// imageState loads an image from the store as a stage's starting point.
// Its layers are unpacked when a snapshot first needs them (ensureLayers).
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
	s.windows = s.img.OS == "windows"
	for _, l := range layers {
		ref, err := imageLayer(l)
		if err != nil {
			return nil, err
		}
		ref.windows = s.windows
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

// describePulled gives the layers of stage st's base image the
// description and time BuildKit's image exporter uses for a layer its
// image's history leaves out (an image assembled without history): the
// image it was pulled from, and when it was (this store got it).
func (b *build) describePulled(st *planner.Stage, s *stageState) error {
	when, err := b.e.opts.Images.StoredAt(st.Base.Image.Digest)
	if err != nil {
		return err
	}
	desc := "pulled from " + pulledName(st)
	for i := range s.layers {
		s.layers[i].desc, s.layers[i].created = desc, when
	}
	return nil
}

// pulledName is the reference BuildKit pulls a stage's base image by: a
// FROM image normalized with its tag and pinned to the digest it resolved
// (docker.io/library/busybox:latest@sha256:…); a docker-image:// named
// context normalized with its tag but not pinned; an oci-layout:// one
// named after the context, pinned to the layout's digest.
func pulledName(st *planner.Stage) string {
	ii, nc := st.Base.Image, st.ImageContext
	switch {
	case nc == nil:
		return resolvedName(ii.Ref, ii.Resolved())
	case nc.Layout != "":
		d := ii.Resolved()
		if i := strings.LastIndex(nc.Layout, "@"); i >= 0 {
			d = nc.Layout[i+1:]
		}
		named, err := reference.ParseNormalizedNamed(nc.Name)
		if err != nil {
			return nc.Name + "@" + d
		}
		return pinned(named, d)
	default:
		named, err := reference.ParseNormalizedNamed(nc.Image)
		if err != nil {
			return nc.Image
		}
		return reference.TagNameOnly(named).String()
	}
}

// remoteBacked is a layer whose bytes are still in a registry.
type remoteBacked interface{ RemoteBacked() bool }

// imageLayer is a layer of a base image, not yet unpacked.
func imageLayer(l v1.Layer) (layerRef, error) {
	d, err := l.DiffID()
	if err != nil {
		return layerRef{}, fmt.Errorf("layer diffID: %w", err)
	}
	size, err := l.Size()
	if err != nil {
		return layerRef{}, fmt.Errorf("layer %s size: %w", d, err)
	}
	return layerRef{diffID: d.String(), size: size, layer: l, image: true}, nil
}

// ensureLayers makes sure the base image layers among layers have a
// directory in the layer store, or can get one when a snapshot needs it
// (a remote-backed layer): called before a snapshot is made on them.
func (b *build) ensureLayers(ctx context.Context, layers []layerRef) error {
	for _, ref := range layers {
		if !ref.image || b.e.opts.Layers.Has(ref.diffID) {
			continue
		}
		if rb, ok := ref.layer.(remoteBacked); ok && rb.RemoteBacked() {
			// A lazily pulled base layer: the layer store fetches it
			// when a step runs over it.
			continue
		}
		if err := b.unpack(ctx, ref); err != nil {
			return err
		}
	}
	return nil
}

func (b *build) unpack(ctx context.Context, ref layerRef) error {
	rc, err := ref.layer.Uncompressed()
	if err != nil {
		return fmt.Errorf("open layer %s: %w", ref.diffID, err)
	}
	defer rc.Close()
	if _, err := b.e.opts.Layers.Unpack(ctx, ref.diffID, rc); err != nil {
		return fmt.Errorf("unpack layer %s: %w", ref.diffID, err)
	}
	return nil
}

// history appends a history entry for a finished step. An entry without
// a layer has no time of its own (unless SOURCE_DATE_EPOCH gives every
// entry one): the image takes it from the entries around it when it is
// made (fillHistoryTimes), as BuildKit's frontend and exporter do.
func (s *stageState) history(createdBy string, empty bool, created time.Time) {
	if created.After(s.created) {
		s.created = created
	}
	var when *time.Time
	switch {
	case s.epoch != nil:
		t := *s.epoch
		when = &t
	case !empty:
		t := s.created
		when = &t
	}
	s.hist = append(s.hist, s.cur)
	s.img.History = append(s.img.History, ocispec.History{
		Created:    when,
		CreatedBy:  createdBy,
		Comment:    "buildkit.dockerfile.v0",
		EmptyLayer: empty,
	})
}
