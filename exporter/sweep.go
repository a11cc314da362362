package exporter

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
)

// Sweep removes the compressed/ and sources/ records that serve nothing
// any more, for the cache's prune (cache.PruneOptions.Sweep): a compressed
// copy of a layer whose blob is neither needed (needed: in the store or
// named by a kept record or image) nor known to a registry, or whose layer
// is gone with it; and the repositories known to hold a blob that is not
// needed and that no remaining compressed record names. A damaged record
// is left to fsck, which names it. It returns the bytes freed.
func (s *Store) Sweep(ctx context.Context, needed func(digest string) bool) (int64, error) {
	named := map[string]bool{} // blobs the kept compressed records name
	freed, err := sweepDir(ctx, s.compressedDir, func(name string, data []byte) bool {
		var rec compressedRecord
		if json.Unmarshal(data, &rec) != nil || rec.Digest.Hex == "" {
			return true
		}
		d := rec.Digest.String()
		keep := needed(d) || (len(s.sourcesOf(rec.Digest)) > 0 && s.layers.Has(rec.DiffID.String()))
		if keep {
			named[d] = true
		}
		return keep
	})
	if err != nil {
		return freed, err
	}
	n, err := sweepDir(ctx, s.sourcesDir, func(name string, _ []byte) bool {
		d := "sha256:" + strings.TrimSuffix(name, ".json")
		return named[d] || needed(d)
	})
	return freed + n, err
}

// sweepDir removes each regular file of dir that keep (given its name and
// content) refuses, and returns the bytes freed. A missing dir is empty.
func sweepDir(ctx context.Context, dir string, keep func(name string, data []byte) bool) (int64, error) {
	if dir == "" {
		return 0, nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var freed int64
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return freed, err
		}
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil || keep(e.Name(), data) {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return freed, err
		}
		freed += int64(len(data))
	}
	return freed, nil
}
