package executor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/builder-dev/builder/cache"
)

// change is a step that produces a layer, prepared by the keys pass: its
// key inputs, its history text, and the work to do on a cache miss.
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
	// onScratch: the change is applied to an empty root, and its layer
	// stacked on the stage's (COPY --link: copyRequest.linkLayer).
	onScratch bool
	// apply changes the mounted root filesystem at root.
	apply func(ctx context.Context, root string) error
	// applyDirect, when set, is apply for a snapshotter that keeps the
	// changes in a directory of their own (snapshot.UpperDirer): it may
	// leave writes for that directory, returned as finish, which runs
	// once root is unmounted (copyPlan.ApplyDirect).
	applyDirect func(ctx context.Context, root string) (finish func(ctx context.Context, upper string) error, err error)
	// content is set for a step that reads a stage, an image or scratch
	// (COPY --from, RUN --mount from=): inputs then name the source by
	// its key, and on a miss content builds or unpacks it and calls fn
	// with the step keyed by the files it reads, while they are
	// available. reads are the stages it builds.
	content func(ctx context.Context, fn func(change) error) error
	reads   []int
	// close releases what the preparation holds (downloads, checkouts),
	// once the build is over.
	close func() error
}

// stepPlan is a step prepared by the keys pass.
type stepPlan struct {
	key cache.Key // the input key
	ch  change
	// volatile: the step reads a stage the build must not take from the
	// cache, so its input key is not looked up.
	volatile bool

	// release runs ch.close once: when the step is resolved, or at the
	// end of the build for a step that never was.
	release func() error

	// The input key's lookup, done once: by prefetch or by the step.
	once    sync.Once
	rec     *cache.Record
	src     string
	lookErr error
}

// lookup looks the step's input key up, once.
func (sp *stepPlan) lookup(ctx context.Context, b *build) (*cache.Record, string, error) {
	sp.once.Do(func() { sp.rec, sp.src, sp.lookErr = b.lookup(ctx, sp.key, sp.ch.inputs) })
	return sp.rec, sp.src, sp.lookErr
}

// needSources starts building the stages the step reads.
func (sp *stepPlan) needSources(b *build) {
	for _, idx := range sp.ch.reads {
		b.need(idx)
	}
}

// prepare keys a prepared change on the stage's key (the keys pass) and
// makes it the step's plan.
func (b *build) prepare(sc *stepCtx, ch change) error {
	ch.inputs = b.layerInputs(sc.s, ch)
	sp := &stepPlan{key: cache.KeyOf(sc.s.key, ch.inputs), ch: ch, release: func() error { return nil }}
	if ch.close != nil {
		sp.release = sync.OnceValue(ch.close)
		b.onClose(sp.release)
	}
	for _, idx := range ch.reads {
		sp.volatile = sp.volatile || b.volatile[idx]
	}
	sc.s.key = sp.key
	sc.plan = sp
	return nil
}

// layerInputs returns the inputs of change ch of stage s with what its
// layer depends on beyond them: SOURCE_DATE_EPOCH, which every layer's
// times depend on, and the Windows layer format of a layer on a Windows
// base image (windowsFormat).
func (b *build) layerInputs(s *stageState, ch change) cache.Inputs {
	in := ch.inputs
	if b.e.opts.SourceDateEpoch != nil {
		in.Fields = append(slices.Clip(in.Fields), cache.Field{Name: "epoch", Value: strconv.FormatInt(b.e.opts.SourceDateEpoch.Unix(), 10)})
	}
	if windowsFormat(s, ch) {
		in.Fields = append(slices.Clip(in.Fields), cache.Field{Name: "layer", Value: "windows"})
	}
	return in
}

// windowsFormat reports whether change ch of stage s makes a layer in
// the Windows layer format: on a Windows base image, unless it is made
// on scratch (COPY --link), as BuildKit writes them.
func windowsFormat(s *stageState, ch change) bool {
	return s.windows && !ch.onScratch
}

// onClose registers what to release when the build is over.
func (b *build) onClose(fn func() error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closers = append(b.closers, fn)
}

// closePrepared releases what the keys pass prepared.
func (b *build) closePrepared() error {
	b.mu.Lock()
	closers := b.closers
	b.closers = nil
	b.mu.Unlock()
	var errs []error
	for _, c := range closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// resolve finds a planned step's result (the build pass): under its input
// key; else, once the stages it reads are built, under its content key;
// else by running it.
func (b *build) resolve(ctx context.Context, sc *stepCtx, sp *stepPlan) error {
	s := sc.s
	sc.rec.Key, sc.rec.Inputs = sp.key, &sp.ch.inputs
	if !b.noCacheFor(sc.st) && !sp.volatile {
		r, src, err := sp.lookup(ctx, b)
		if err != nil {
			return err
		}
		if r != nil {
			ct := cache.KeyOf(s.ctKey, sp.ch.inputs)
			if sp.ch.content != nil {
				// The files it read are known by its record, if at all.
				ct = sp.key
				if !r.ContentKey.IsZero() {
					ct = r.ContentKey
				}
			}
			return b.hit(sc, sp.key, ct, r, src, sp.ch)
		}
	}
	if sp.ch.content == nil {
		return b.missed(ctx, sc, sp, sp.ch, nil)
	}
	return sp.ch.content(ctx, func(read change) error {
		read.inputs = b.layerInputs(sc.s, read)
		return b.missed(ctx, sc, sp, read, &read.inputs)
	})
}

// missed resolves a step whose input key missed: run is the change to
// run, keyed on the stage's content chain (with the files a step reading
// another stage reads: content). A hit there is stored under the input
// key too; a step that runs is stored under both keys.
func (b *build) missed(ctx context.Context, sc *stepCtx, sp *stepPlan, run change, content *cache.Inputs) error {
	s := sc.s
	ct := cache.KeyOf(s.ctKey, run.inputs)
	if ct != sp.key {
		sc.rec.ContentKey = ct
	}
	if !b.noCacheFor(sc.st) && ct != sp.key {
		alias, src, err := b.lookupAlias(ctx, ct, run.inputs, sp, ct)
		if err != nil {
			return err
		}
		if alias != nil {
			if content != nil {
				// The steps after it are on a new input chain.
				s.parentReason, s.parentKnown = fmt.Sprintf("parent step's source changed (line %d)", sc.step.Line), true
			}
			return b.hit(sc, sp.key, ct, alias, src, sp.ch)
		}
	}
	if run.onScratch && !b.noCacheFor(sc.st) {
		alias, src, err := b.lookupAlias(ctx, onScratchKey(run.inputs), run.inputs, sp, ct)
		if err != nil {
			return err
		}
		if alias != nil {
			if err := b.hit(sc, sp.key, ct, alias, src, sp.ch); err != nil {
				return err
			}
			sc.rec.Reason = "--link layer of an earlier build, over other steps"
			if src != "" {
				sc.rec.Reason += ", from " + src
			}
			return nil // the steps after it miss for the reason it did
		}
	}
	sc.rec.Cache = "miss"
	sc.rec.Reason = b.explain(ctx, sc, sp.key, &sp.ch.inputs, content)
	sc.ev.Cache, sc.ev.Reason = "miss", sc.rec.Reason
	r, shared, err := b.executeOnce(ctx, s, sp, run, ct)
	if err != nil {
		return err
	}
	if shared != "" {
		sc.rec.Cache, sc.rec.Reason = "hit", "run once in this build, for "+shared
		sc.ev.Cache, sc.ev.Reason = "hit", ""
		return b.hit(sc, sp.key, ct, r, "", run)
	}
	sc.rec.InputsDigest = r.InputsDigest // Put stored large inputs as this blob
	if err := b.applyResult(sc, sp.key, r, run); err != nil {
		return err
	}
	s.ctKey = ct
	sc.rec.Layer, sc.rec.Size = r.DiffID, r.Size
	s.parentReason, s.parentKnown = fmt.Sprintf("parent step rebuilt (line %d)", sc.step.Line), true
	return nil
}

// executeOnce runs a step that missed both its keys and stores its
// record under both (the content key ct when it differs) — once among
// the Runs sharing the build's Flights (the platforms of a multi-platform
// build): a Run that finds another running the same input key takes that
// one's record, and shared names the other (its platform).
func (b *build) executeOnce(ctx context.Context, s *stageState, sp *stepPlan, run change, ct cache.Key) (r *cache.Record, shared string, err error) {
	exec := func() (*cache.Record, error) {
		ran := time.Now()
		r, err := b.execute(ctx, s, sp.key, run)
		if err != nil {
			return nil, err
		}
		r.RunMS = time.Since(ran).Milliseconds()
		r.Inputs = sp.ch.inputs
		if ct != sp.key {
			byContent := *r
			byContent.Key, byContent.Inputs = ct, run.inputs
			if err := b.e.opts.Cache.Put(ctx, &byContent); err != nil {
				return nil, fmt.Errorf("cache put: %w", err)
			}
			r.ContentKey = ct
		}
		if run.onScratch {
			byLink := *r
			byLink.Key, byLink.Inputs, byLink.ContentKey = onScratchKey(run.inputs), run.inputs, cache.Key{}
			if err := b.e.opts.Cache.Put(ctx, &byLink); err != nil {
				return nil, fmt.Errorf("cache put: %w", err)
			}
		}
		if err := b.e.opts.Cache.Put(ctx, r); err != nil {
			return nil, fmt.Errorf("cache put: %w", err)
		}
		return r, nil
	}
	if b.e.opts.Flights == nil {
		r, err := exec()
		return r, "", err
	}
	return b.e.opts.Flights.do(ctx, sp.key, b.e.opts.Name, exec)
}

// onScratchKey is the key of a change made on an empty root (a COPY
// --link's layer) by its inputs alone: the layer does not depend on the
// steps below it, so a build whose earlier steps changed reuses it, as
// BuildKit does.
func onScratchKey(in cache.Inputs) cache.Key {
	return cache.KeyOf(onScratchRoot, in)
}

var onScratchRoot = cache.KeyOf(cache.Key{}, cache.Inputs{Op: "on-scratch"})

// hit applies a found result r (stored under key) to the stage; ct is the
// step's key on the content chain. src names the imported cache it came
// from ("" for the local cache). ch is the step (its history text).
func (b *build) hit(sc *stepCtx, key, ct cache.Key, r *cache.Record, src string, ch change) error {
	sc.rec.Cache = "hit"
	if src != "" {
		sc.rec.Reason = "from " + src
	}
	if ct != key {
		sc.rec.ContentKey = ct
	}
	sc.rec.Layer, sc.rec.Size, sc.rec.InputsDigest = r.DiffID, r.Size, r.InputsDigest
	sc.rec.SavedMS = r.RunMS // known when the record carries it
	if err := b.applyResult(sc, key, r, ch); err != nil {
		return err
	}
	sc.s.ctKey = ct
	return nil
}

// lookupAlias looks key up (a key other than the step's input key,
// with inputs) and stores what it finds under the input key too
// (putAlias); nil when it finds nothing.
func (b *build) lookupAlias(ctx context.Context, key cache.Key, inputs cache.Inputs, sp *stepPlan, ct cache.Key) (*cache.Record, string, error) {
	r, src, err := b.lookup(ctx, key, inputs)
	if err != nil || r == nil {
		return nil, "", err
	}
	alias, err := b.putAlias(ctx, r, sp.key, sp.ch.inputs, ct)
	return alias, src, err
}

// putAlias stores r, found under its content key ct, under the input key
// too, so the next build hits without building the stages the step reads.
func (b *build) putAlias(ctx context.Context, r *cache.Record, key cache.Key, inputs cache.Inputs, ct cache.Key) (*cache.Record, error) {
	alias := *r
	alias.Key, alias.Inputs, alias.InputsDigest, alias.ContentKey = key, inputs, "", ct
	if r.InputsDigest != "" {
		alias.Blobs = slices.DeleteFunc(slices.Clone(r.Blobs), func(d string) bool { return d == r.InputsDigest })
	}
	if err := b.e.opts.Cache.Put(ctx, &alias); err != nil {
		return nil, fmt.Errorf("cache put: %w", err)
	}
	return &alias, nil
}

// lookup finds key's result in the local cache, else in the imported
// caches (then stored locally with inputs); src names the imported cache.
// A miss is a nil record.
func (b *build) lookup(ctx context.Context, key cache.Key, inputs cache.Inputs) (r *cache.Record, src string, err error) {
	r, err = b.e.opts.Cache.Lookup(ctx, key)
	switch {
	case err == nil && (r.EmptyLayer || b.e.opts.Layers.Has(r.DiffID)):
		return r, "", nil
	case err != nil && !errors.Is(err, cache.ErrNotFound):
		return nil, "", fmt.Errorf("cache lookup: %w", err)
	}
	return b.remoteLookup(ctx, key, inputs)
}
