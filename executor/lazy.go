package executor

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/planner"
)

// A build runs in two passes, as BuildKit's solver does.
//
// The keys pass (keyStage) walks every stage without running anything:
// it evolves the image config, selects and hashes the context files of
// COPY and ADD, resolves URLs and Git refs, and computes each step's
// input key. A step that reads another stage (COPY --from, RUN --mount
// from=) is keyed by that stage's final input key, so no stage has to be
// built for another's keys to be known.
//
// The build pass (runStage) builds a stage only when something needs its
// result: the target, the base of a stage being built, or a source whose
// consumer missed its input key. A consumer that misses builds its source
// and tries its content key (the files it reads) before running: a
// rebuilt source with the same files still hits. A stage whose consumers
// all hit is never built, not even its base image's layers unpacked.

// stageRun is one stage of a build: its keys, and its result once built.
type stageRun struct {
	st *planner.Stage

	keysDone chan struct{} // closed when keys or keysErr is set
	keys     *stageKeys
	keysErr  error

	start   sync.Once
	started atomic.Bool
	done    chan struct{} // closed when res or err is set
	res     *stageState
	err     error
}

// stageKeys is a stage keyed without running anything.
type stageKeys struct {
	// from and rootKey are the stage's FROM inputs and key; base is the
	// state it starts from when that is an image or scratch.
	from    cache.Inputs
	rootKey cache.Key
	base    *stageState
	// state is the config and input key after the stage's last step.
	state *stageState
	// steps[i] is step i prepared; nil for steps that only change the
	// config.
	steps  []*stepPlan
	labels []string
}

func newStageRun(st *planner.Stage) *stageRun {
	return &stageRun{st: st, keysDone: make(chan struct{}), done: make(chan struct{})}
}

// need starts building a stage, once.
func (b *build) need(idx int) {
	sr, ok := b.stages[idx]
	if !ok {
		return
	}
	sr.start.Do(func() {
		sr.started.Store(true)
		b.g.Go(func() error { return b.runStage(b.gctx, sr.st) })
	})
}

// result builds a stage if nobody asked for it yet and waits for it.
func (b *build) result(ctx context.Context, idx int) (*stageState, error) {
	sr, ok := b.stages[idx]
	if !ok {
		return nil, fmt.Errorf("stage %d is not part of the plan", idx)
	}
	b.need(idx)
	select {
	case <-sr.done:
		if sr.err != nil {
			return nil, fmt.Errorf("stage %d failed", idx)
		}
		return sr.res, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// stageKeys waits for a stage's keys.
func (b *build) stageKeys(ctx context.Context, idx int) (*stageKeys, error) {
	sr, ok := b.stages[idx]
	if !ok {
		return nil, fmt.Errorf("stage %d is not part of the plan", idx)
	}
	select {
	case <-sr.keysDone:
		if sr.keysErr != nil {
			return nil, fmt.Errorf("stage %d failed", idx)
		}
		return sr.keys, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// keyStage is the keys pass of one stage.
func (b *build) keyStage(ctx context.Context, st *planner.Stage) (err error) {
	sr := b.stages[st.Index]
	defer func() {
		sr.keysErr = err
		if err != nil {
			b.fail(err)
		}
		close(sr.keysDone)
	}()
	s, from, err := b.keyBase(ctx, st)
	if err != nil {
		return &StepError{Path: b.e.opts.DockerfilePath, Stage: stageName(st), Line: st.Line, Instruction: st.Text, Err: err}
	}
	sk := &stageKeys{from: from, rootKey: s.key, base: s.clone(), steps: make([]*stepPlan, len(st.Steps))}
	_, sk.labels = stageLabels(st, b.namesStages, b.e.opts.MultiPlatform)
	s.labels = sk.labels
	for i, step := range st.Steps {
		sp, err := b.keyStep(ctx, st, s, i, step)
		if err != nil {
			return err
		}
		sk.steps[i] = sp
	}
	sk.state = s
	sr.keys = sk
	return nil
}

// volatileStages are the stages whose results a build must not take from
// the cache: those of --no-cache(-filter), and those built on or reading
// one of them. A step reading such a stage skips its input key: it builds
// the stage and can only hit by the files it reads.
func (b *build) volatileStages() map[int]bool {
	v := make(map[int]bool, len(b.plan.Stages))
	for _, st := range b.plan.Stages { // dependencies first
		v[st.Index] = b.noCacheFor(st)
		for _, d := range st.DependsOn {
			v[st.Index] = v[st.Index] || v[d]
		}
	}
	return v
}

// prefetch starts building, in parallel, the stages read by the steps
// of st whose input key misses: each such step will need its sources
// before it can try its content key, and independent sources build at
// the same time as BuildKit's.
func (b *build) prefetch(ctx context.Context, st *planner.Stage, sk *stageKeys) {
	cached := !b.noCacheFor(st)
	for _, sp := range sk.steps {
		if sp == nil || len(sp.ch.reads) == 0 {
			continue
		}
		if !cached || sp.volatile {
			sp.needSources(b)
			continue
		}
		b.g.Go(func() error {
			// A lookup error is the step's to report when it runs.
			if r, _, err := sp.lookup(ctx, b); r == nil && err == nil {
				sp.needSources(b)
			}
			return nil
		})
	}
}

// reportUnbuilt records the steps of the stages nobody needed: every
// consumer hit without them. BuildKit shows them as cached; a step whose
// record the local cache lacks (its result came in a consumer's imported
// record) says its result was not needed.
func (b *build) reportUnbuilt(ctx context.Context) {
	for _, st := range b.plan.Stages {
		sr := b.stages[st.Index]
		if sr.started.Load() || sr.keys == nil {
			continue
		}
		sk := sr.keys
		ev := b.fromEvent(st)
		b.addStep(st.Index, -1, cache.StepRecord{Stage: stageName(st), Line: st.Line, Instruction: st.Text,
			Name: ev.Title(), Key: sk.rootKey, Inputs: &sk.from, Cache: "hit"})
		if st.Base.Image != nil {
			b.e.opts.Progress.Event(ev)
			ev.Kind, ev.Cache = StepDone, "hit"
			b.e.opts.Progress.Event(ev)
		}
		for i, step := range st.Steps {
			b.reportUnbuiltStep(ctx, st, sk, i, step)
		}
	}
}

func (b *build) reportUnbuiltStep(ctx context.Context, st *planner.Stage, sk *stageKeys, i int, step *planner.Step) {
	ev := Event{Stage: stageName(st), Step: i + 1, Total: len(st.Steps), Label: sk.labels[i], Line: step.Line, Instruction: step.Text, Name: step.Name}
	b.e.opts.Progress.Event(ev)
	rec := cache.StepRecord{Stage: ev.Stage, Line: step.Line, Instruction: step.Text, Name: ev.Title(), Cache: "hit"}
	if sp := sk.steps[i]; sp != nil {
		rec.Key, rec.Inputs = sp.key, &sp.ch.inputs
		r, err := b.e.opts.Cache.Lookup(ctx, sp.key)
		if err == nil && (r.EmptyLayer || b.e.opts.Layers.Has(r.DiffID)) {
			rec.Layer, rec.Size, rec.InputsDigest, rec.SavedMS, rec.ContentKey = r.DiffID, r.Size, r.InputsDigest, r.RunMS, r.ContentKey
		} else {
			rec.Reason = reasonNotNeeded
		}
	}
	if rec.Key.IsZero() {
		rec.Cache = CacheNone
	}
	ev.Kind, ev.Cache, ev.Reason, ev.Metadata = StepDone, rec.Cache, rec.Reason, rec.Key.IsZero()
	b.e.opts.Progress.Event(ev)
	b.addStep(st.Index, i, rec)
}

// reasonNotNeeded is the reason of a step of a stage that was not built
// and whose record the local cache lacks.
const reasonNotNeeded = "result not needed"
