package executor

import (
	"context"
	"errors"
	"fmt"

	"github.com/builder-dev/builder/cache"
)

// RemoteCache is a cache imported before the build (--cache-from). On a
// local miss, a key it holds becomes a hit: Fetch brings the result's
// layer into the local stores, and the record is put in the local cache.
type RemoteCache interface {
	// Fetch returns the record of key, or an error wrapping
	// cache.ErrNotFound when the remote cache lacks key. Its layer is
	// stored locally, or remote-backed: the layer store fetches it when a
	// snapshot over it is prepared. It is called from parallel stages.
	Fetch(ctx context.Context, key cache.Key) (*cache.Record, error)
	// Source names the cache in progress output: "CACHED (from SOURCE)".
	Source() string
}

// remoteHit looks key up in the imported caches after a local miss. It
// reports whether one held the step, whose result is then applied as a hit.
func (b *build) remoteHit(ctx context.Context, sc *stepCtx, key cache.Key, ch change) (bool, error) {
	for _, rc := range b.e.opts.CacheFrom {
		r, err := rc.Fetch(ctx, key)
		if errors.Is(err, cache.ErrNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("import cache: %w", err)
		}
		r.Inputs, r.InputsDigest = ch.inputs, ""
		if err := b.e.opts.Cache.Put(ctx, r); err != nil {
			return false, fmt.Errorf("cache put: %w", err)
		}
		sc.rec.Cache, sc.rec.Reason = "hit", "from "+rc.Source()
		sc.rec.Layer, sc.rec.Size, sc.rec.InputsDigest = r.DiffID, r.Size, r.InputsDigest
		sc.rec.SavedMS = r.RunMS // known when the cache carries it
		return true, b.applyResult(sc, key, r, ch)
	}
	return false, nil
}

// CacheMode chooses the steps a cache export holds.
type CacheMode string

const (
	// CacheMin exports the steps that made the final image's layers.
	CacheMin CacheMode = "min"
	// CacheMax exports every step of every stage built.
	CacheMax CacheMode = "max"
)

// CacheRecords returns the cache records of res's steps for export, in
// build order, each once: with CacheMin those of the final image's
// history, with CacheMax those of all stages. Steps without a record (FROM,
// metadata) are left out.
func CacheRecords(ctx context.Context, c recordLookup, res *Result, mode CacheMode) ([]*cache.Record, error) {
	steps := res.Record.Steps
	var idx []int
	switch mode {
	case CacheMin:
		for _, i := range res.History {
			if i >= 0 {
				idx = append(idx, i)
			}
		}
	case CacheMax:
		for i := range steps {
			idx = append(idx, i)
		}
	default:
		return nil, fmt.Errorf("cache mode %q: want min or max", mode)
	}
	var out []*cache.Record
	seen := map[cache.Key]bool{}
	for _, i := range idx {
		s := steps[i]
		if s.Key.IsZero() || seen[s.Key] || (s.Inputs != nil && s.Inputs.Op == "FROM") {
			continue
		}
		seen[s.Key] = true
		r, err := c.Lookup(ctx, s.Key)
		if err != nil {
			return nil, fmt.Errorf("cache record of line %d: %w", s.Line, err)
		}
		out = append(out, r)
	}
	return out, nil
}
