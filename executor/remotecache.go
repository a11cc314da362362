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

// remoteLookup looks key up in the imported caches after a local miss.
// A record found is put in the local cache with inputs; src names the
// cache it came from. A miss is a nil record.
func (b *build) remoteLookup(ctx context.Context, key cache.Key, inputs cache.Inputs) (*cache.Record, string, error) {
	for _, rc := range b.e.opts.CacheFrom {
		r, err := rc.Fetch(ctx, key)
		if errors.Is(err, cache.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("import cache: %w", err)
		}
		r.Inputs, r.InputsDigest = inputs, ""
		if err := b.e.opts.Cache.Put(ctx, r); err != nil {
			return nil, "", fmt.Errorf("cache put: %w", err)
		}
		return r, rc.Source(), nil
	}
	return nil, "", nil
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
// metadata, the steps of a stage that was not built and whose record the
// local cache lacks) are left out. A step with a content key is exported
// under both keys, so an importer hits by either.
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
		if errors.Is(err, cache.ErrNotFound) && s.Reason == reasonNotNeeded {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cache record of line %d: %w", s.Line, err)
		}
		out = append(out, r)
		if ct := r.ContentKey; !ct.IsZero() && !seen[ct] {
			seen[ct] = true
			byContent := *r
			byContent.Key, byContent.ContentKey = ct, cache.Key{}
			out = append(out, &byContent)
		}
	}
	return out, nil
}
