package executor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/planner"
	"github.com/builder-dev/builder/snapshot"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// runStep builds one step (the build pass), attaching the Dockerfile
// location to any error: a step the keys pass prepared (sp) is resolved,
// one that only changes the config is applied.
func (b *build) runStep(ctx context.Context, st *planner.Stage, s *stageState, i int, step *planner.Step, sp *stepPlan) (err error) {
	ev := Event{Stage: stageName(st), Step: i + 1, Total: len(st.Steps), Label: s.labels[i], Line: step.Line, Instruction: step.Text, Name: step.Name}
	// A step starts, in progress and in its duration, once the stages it
	// reads are built: a COPY --from's time is its own, not its source's.
	if err := b.awaitSources(ctx, st, sp); err != nil {
		return err
	}
	b.e.opts.Progress.Event(ev)
	rec := cache.StepRecord{Stage: ev.Stage, Line: step.Line, Instruction: step.Text, Name: ev.Title(), Cache: "hit"}
	start := time.Now()
	defer func() {
		if err != nil {
			err = &StepError{Path: b.e.opts.DockerfilePath, Stage: ev.Stage, Line: step.Line, Instruction: step.Text, Err: err}
		}
		rec.DurationMS = time.Since(start).Milliseconds()
		if rec.Key.IsZero() {
			rec.Cache = CacheNone
		}
		ev.Kind, ev.Cache, ev.Reason, ev.Duration, ev.Err = StepDone, rec.Cache, rec.Reason, time.Since(start), err
		ev.Metadata = rec.Key.IsZero()
		b.e.opts.Progress.Event(ev)
		b.addStep(st.Index, i, rec)
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	s.cur = stepRef{st.Index, i}
	sc := &stepCtx{st: st, s: s, step: step, index: i, rec: &rec, ev: ev}
	if sp == nil {
		return b.configStep(ctx, sc)
	}
	if c, ok := step.Cmd.(*instructions.WorkdirCommand); ok {
		wd, err := resolveWorkdirFor(s.img.Config.WorkingDir, c.Path, st.Platform.OS)
		if err != nil {
			return err
		}
		s.img.Config.WorkingDir = wd
	}
	defer sp.release() // downloads and checkouts: nothing to report
	return b.resolve(ctx, sc, sp)
}

// keyStep prepares one step (the keys pass): the step's inputs, its
// input key, what it runs on a miss; nil for a step that only changes the
// config, which is applied. A step that fails here is reported as the
// build pass reports one.
func (b *build) keyStep(ctx context.Context, st *planner.Stage, s *stageState, i int, step *planner.Step) (_ *stepPlan, err error) {
	ev := Event{Stage: stageName(st), Step: i + 1, Total: len(st.Steps), Label: s.labels[i], Line: step.Line, Instruction: step.Text, Name: step.Name}
	rec := cache.StepRecord{Stage: ev.Stage, Line: step.Line, Instruction: step.Text, Name: ev.Title(), Cache: "miss"}
	defer func() {
		if err == nil {
			return
		}
		err = &StepError{Path: b.e.opts.DockerfilePath, Stage: ev.Stage, Line: step.Line, Instruction: step.Text, Err: err}
		if ctx.Err() == nil {
			b.e.opts.Progress.Event(ev)
			ev.Kind, ev.Cache, ev.Err = StepDone, rec.Cache, err
			b.e.opts.Progress.Event(ev)
			b.addStep(st.Index, i, rec)
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.cur = stepRef{st.Index, i}
	sc := &stepCtx{st: st, s: s, step: step, index: i, rec: &rec, ev: ev}
	switch c := step.Cmd.(type) {
	case *instructions.RunCommand:
		err = b.dispatchRun(ctx, sc, c)
	case *instructions.CopyCommand:
		err = b.dispatchCopy(ctx, sc, copyRequestOf(c))
	case *instructions.AddCommand:
		err = b.dispatchCopy(ctx, sc, addRequestOf(c))
	case *instructions.WorkdirCommand:
		err = b.dispatchWorkdir(ctx, sc, c)
	default:
		err = b.configStep(ctx, sc)
	}
	return sc.plan, err
}

// configStep applies a step that only changes the image config: ARG,
// ENV, USER..., and a WORKDIR that resolves to "/" (nothing to create).
func (b *build) configStep(ctx context.Context, sc *stepCtx) error {
	s, step := sc.s, sc.step
	switch c := step.Cmd.(type) {
	case *instructions.WorkdirCommand:
		return b.dispatchWorkdir(ctx, sc, c)
	case *instructions.ArgCommand:
		s.args = append(s.args, argValues(c)...)
	}
	msg, record, ok, err := s.applyMetadata(step.Cmd, s.args[len(s.args)-argCount(step.Cmd):])
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("unsupported instruction %s", step.Cmd.Name())
	}
	if record {
		s.history(msg, true, time.Time{})
	}
	return nil
}

// awaitSources builds the stages a step reads (COPY --from, RUN --mount
// from=) when it will need them — its input key misses, or it must not
// be taken from the cache — and waits for them. Their failure is reported
// by their own steps.
func (b *build) awaitSources(ctx context.Context, st *planner.Stage, sp *stepPlan) error {
	if sp == nil || len(sp.ch.reads) == 0 {
		return nil
	}
	if !b.noCacheFor(st) && !sp.volatile {
		r, _, err := sp.lookup(ctx, b)
		if err != nil || r != nil {
			return nil // the step reports a lookup error; a hit reads nothing
		}
	}
	for _, idx := range sp.ch.reads {
		if _, err := b.result(ctx, idx); err != nil {
			return err
		}
	}
	return nil
}

// CacheNone is the cache result of a step that only changes the image
// config: it has no key and nothing to reuse, so it is neither a hit nor a
// miss.
const CacheNone = "none"

func argCount(c instructions.Command) int {
	if a, ok := c.(*instructions.ArgCommand); ok {
		return len(a.Args)
	}
	return 0
}

// argValues returns the ARG definitions with the values they take in this
// build, which the planner stored in the expanded command: a redeclared
// ARG shows its new value, as in BuildKit's history.
func argValues(c *instructions.ArgCommand) []instructions.KeyValuePairOptional {
	return slices.Clone(c.Args)
}

// stepCtx is what the dispatchers of one step share.
type stepCtx struct {
	st    *planner.Stage
	s     *stageState
	step  *planner.Step
	index int
	rec   *cache.StepRecord
	ev    Event
	// plan is the step prepared by the keys pass (prepare).
	plan *stepPlan
}

func (b *build) noCacheFor(st *planner.Stage) bool {
	if b.e.opts.NoCache {
		return true
	}
	return st.Name != "" && slices.Contains(b.e.opts.NoCacheStages, st.Name)
}

// applyResult adds a step result to the stage. The history entry shows
// ch.createdBy, the instruction as written, even when the record was made
// by another instruction with the same key (COPY /a/. /out/ and COPY ./a
// /out/ copy the same files), as BuildKit's history comes from the
// Dockerfile.
func (b *build) applyResult(sc *stepCtx, key cache.Key, r *cache.Record, ch change) error {
	s := sc.s
	if !r.EmptyLayer {
		l, err := b.e.opts.Images.StoredLayer(r.DiffID, r.Size)
		if err != nil {
			return err
		}
		desc := ch.desc
		if desc == "" {
			desc = sc.ev.Title()
		}
		s.layers = append(s.layers, layerRef{diffID: r.DiffID, size: r.Size, layer: l, desc: desc, created: r.Created, windows: windowsFormat(s, ch)})
	}
	s.key = key
	if ch.noHistory {
		if r.Created.After(s.created) {
			s.created = r.Created
		}
		return nil
	}
	s.history(ch.createdBy, r.EmptyLayer, r.Created)
	return nil
}

// execute runs a change on a fresh snapshot of the stage (of nothing for
// a change onScratch) and commits it.
func (b *build) execute(ctx context.Context, s *stageState, key cache.Key, ch change) (rec *cache.Record, err error) {
	var parents []string
	var prepOpts []snapshot.PrepareOption
	if !ch.onScratch {
		if err := b.ensureLayers(ctx, s.layers); err != nil {
			return nil, err
		}
		parents, prepOpts = s.parents(), layersOptions(s.layers)
	}
	sn := b.e.opts.Snapshotter
	active := b.activeKey()
	mounts, err := sn.Prepare(ctx, active, parents, prepOpts...)
	if err != nil {
		return nil, fmt.Errorf("prepare snapshot: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			if rerr := sn.Remove(context.WithoutCancel(ctx), active); rerr != nil && err == nil {
				err = rerr
			}
		}
	}()
	if err := b.applyChange(ctx, sn, active, mounts, ch); err != nil {
		return nil, err
	}
	var opts []snapshot.DiffOption
	if b.e.opts.SourceDateEpoch != nil {
		opts = append(opts, snapshot.WithSourceDateEpoch(*b.e.opts.SourceDateEpoch))
	}
	if windowsFormat(s, ch) {
		opts = append(opts, snapshot.WithWindowsFormat())
	}
	layer, err := sn.Commit(ctx, active, opts...)
	if err != nil {
		return nil, fmt.Errorf("commit snapshot: %w", err)
	}
	committed = true
	created := time.Now().UTC()
	if b.e.opts.SourceDateEpoch != nil {
		created = *b.e.opts.SourceDateEpoch
	}
	return &cache.Record{
		Key:    key,
		Inputs: ch.inputs,
		DiffID: layer.DiffID,
		Size:   layer.Size,
		// Like BuildKit, a step that changes nothing still adds its
		// (empty) layer: the image's layers match its history entries.
		EmptyLayer: false,
		CreatedBy:  ch.createdBy,
		Comment:    "buildkit.dockerfile.v0",
		Created:    created,
	}, nil
}

// applyChange applies ch to the active snapshot: on its mounted root, and
// for a snapshotter with an upper directory, then what ch left for it.
func (b *build) applyChange(ctx context.Context, sn snapshot.Snapshotter, active string, mounts []snapshot.Mount, ch change) error {
	ud, ok := sn.(snapshot.UpperDirer)
	if !ok || ch.applyDirect == nil {
		return b.withMounted(ctx, mounts, func(root string) error { return ch.apply(ctx, root) })
	}
	var finish func(context.Context, string) error
	if err := b.withMounted(ctx, mounts, func(root string) (err error) {
		finish, err = ch.applyDirect(ctx, root)
		return err
	}); err != nil || finish == nil {
		return err
	}
	upper, err := ud.UpperDir(ctx, active)
	if err != nil {
		return err
	}
	return finish(ctx, upper)
}

func (b *build) activeKey() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	return fmt.Sprintf("%s-%d", b.record.ID, b.seq)
}

// withMounted mounts a snapshot at a fresh temporary directory, calls fn
// and unmounts. The builder runs in its own mount namespace, so a crash
// cannot leave these mounts behind on the host.
func (b *build) withMounted(ctx context.Context, mounts []snapshot.Mount, fn func(root string) error) (err error) {
	if b.e.opts.Isolation == sandbox.IsolationChroot {
		// Nothing may be mounted: the copy snapshotter's directory is
		// the root itself.
		if len(mounts) != 1 || mounts[0].Type != "bind" {
			return fmt.Errorf("isolation chroot mounts nothing: a snapshot must be one directory, not %d mounts", len(mounts))
		}
		return fn(mounts[0].Source)
	}
	root, err := os.MkdirTemp(b.e.opts.TempDir, "root-")
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.Remove(root); rerr != nil && err == nil {
			err = rerr
		}
	}()
	for _, m := range mounts {
		if err := b.e.opts.Mounter.Mount(m, root); err != nil {
			if errors.Is(err, unix.EPERM) {
				return fmt.Errorf("mount root filesystem (builder needs root privileges): %w", err)
			}
			return fmt.Errorf("mount root filesystem: %w", err)
		}
	}
	defer func() {
		for range mounts {
			if uerr := b.e.opts.Mounter.Unmount(root); uerr != nil && err == nil {
				err = uerr
			}
		}
	}()
	return fn(root)
}
