package executor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/planner"
	"github.com/builder-dev/builder/snapshot"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// runStep runs one step, attaching the Dockerfile location to any error.
func (b *build) runStep(ctx context.Context, st *planner.Stage, s *stageState, i int, step *planner.Step) (err error) {
	ev := Event{Stage: stageName(st), Step: i + 1, Total: len(st.Steps), Label: s.labels[i], Line: step.Line, Instruction: step.Text, Name: step.Name}
	b.e.opts.Progress.Event(ev)
	rec := cache.StepRecord{Stage: ev.Stage, Line: step.Line, Instruction: step.Text, Name: ev.Title(), Cache: "hit"}
	start := time.Now()
	defer func() {
		if err != nil {
			err = &StepError{Path: b.e.opts.DockerfilePath, Stage: ev.Stage, Line: step.Line, Instruction: step.Text, Err: err}
		}
		rec.DurationMS = time.Since(start).Milliseconds()
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
	switch c := step.Cmd.(type) {
	case *instructions.RunCommand:
		return b.dispatchRun(ctx, sc, c)
	case *instructions.CopyCommand:
		return b.dispatchCopy(ctx, sc, copyRequestOf(c))
	case *instructions.AddCommand:
		return b.dispatchCopy(ctx, sc, addRequestOf(c))
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
}

// change is a step that produces a layer: its key inputs, its history text,
// and the work to do on a cache miss.
type change struct {
	inputs    cache.Inputs
	createdBy string
	// desc describes the layer as BuildKit describes the snapshot a step
	// makes (its vertex name; "mount / from exec ARGS" for a RUN): the
	// history text of a layer that has no history entry (finalImage).
	desc string
	// noHistory adds the layer without a history entry, as BuildKit loads
	// a local context.
	noHistory bool
	// apply changes the mounted root filesystem at root.
	apply func(ctx context.Context, root string) error
}

// keyed looks the change up in the cache and executes it on a miss.
func (b *build) keyed(ctx context.Context, sc *stepCtx, ch change) error {
	s := sc.s
	if b.e.opts.SourceDateEpoch != nil {
		ch.inputs.Fields = append(ch.inputs.Fields, cache.Field{Name: "epoch", Value: strconv.FormatInt(b.e.opts.SourceDateEpoch.Unix(), 10)})
	}
	key := cache.KeyOf(s.key, ch.inputs)
	sc.rec.Key, sc.rec.Inputs = key, &ch.inputs
	if !b.noCacheFor(sc.st) {
		r, err := b.e.opts.Cache.Lookup(ctx, key)
		switch {
		case err == nil && (r.EmptyLayer || b.e.opts.Layers.Has(r.DiffID)):
			sc.rec.Cache = "hit"
			sc.rec.Layer, sc.rec.Size, sc.rec.InputsDigest = r.DiffID, r.Size, r.InputsDigest
			sc.rec.SavedMS = r.RunMS
			return b.applyResult(sc, key, r, ch)
		case err != nil && !errors.Is(err, cache.ErrNotFound):
			return fmt.Errorf("cache lookup: %w", err)
		}
		if hit, err := b.remoteHit(ctx, sc, key, ch); hit || err != nil {
			return err
		}
	}
	sc.rec.Cache = "miss"
	sc.rec.Reason = b.explain(ctx, sc, key, &ch.inputs)
	sc.ev.Cache, sc.ev.Reason = "miss", sc.rec.Reason
	r, shared, err := b.executeOnce(ctx, s, key, ch)
	if err != nil {
		return err
	}
	if shared != "" {
		sc.rec.Cache, sc.rec.Reason = "hit", "run once in this build, for "+shared
		sc.ev.Cache, sc.ev.Reason = "hit", ""
		sc.rec.Layer, sc.rec.Size, sc.rec.InputsDigest = r.DiffID, r.Size, r.InputsDigest
		return b.applyResult(sc, key, r, ch)
	}
	sc.rec.InputsDigest = r.InputsDigest // Put stored large inputs as this blob
	if err := b.applyResult(sc, key, r, ch); err != nil {
		return err
	}
	sc.rec.Layer, sc.rec.Size = r.DiffID, r.Size
	s.parentReason, s.parentKnown = fmt.Sprintf("parent step rebuilt (line %d)", sc.step.Line), true
	return nil
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
		s.layers = append(s.layers, layerRef{diffID: r.DiffID, size: r.Size, layer: l, desc: desc, created: r.Created})
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

// executeOnce executes a change that missed the cache and stores its
// record — once among the Runs sharing the build's Flights: a Run that
// finds another executing the same key takes that one's record, and
// shared names the other (its platform).
func (b *build) executeOnce(ctx context.Context, s *stageState, key cache.Key, ch change) (r *cache.Record, shared string, err error) {
	run := func() (*cache.Record, error) {
		ran := time.Now()
		r, err := b.execute(ctx, s, key, ch)
		if err != nil {
			return nil, err
		}
		r.RunMS = time.Since(ran).Milliseconds()
		if err := b.e.opts.Cache.Put(ctx, r); err != nil {
			return nil, fmt.Errorf("cache put: %w", err)
		}
		return r, nil
	}
	if b.e.opts.Flights == nil {
		r, err := run()
		return r, "", err
	}
	return b.e.opts.Flights.do(ctx, key, b.e.opts.Name, run)
}

// execute runs a change on a fresh snapshot and commits it.
func (b *build) execute(ctx context.Context, s *stageState, key cache.Key, ch change) (rec *cache.Record, err error) {
	sn := b.e.opts.Snapshotter
	active := b.activeKey()
	mounts, err := sn.Prepare(ctx, active, s.parents())
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
	if err := b.withMounted(ctx, mounts, func(root string) error { return ch.apply(ctx, root) }); err != nil {
		return nil, err
	}
	var opts []snapshot.DiffOption
	if b.e.opts.SourceDateEpoch != nil {
		opts = append(opts, snapshot.WithSourceDateEpoch(*b.e.opts.SourceDateEpoch))
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
