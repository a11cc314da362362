package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// PruneOptions selects what Prune removes.
type PruneOptions struct {
	// All also removes build records of images that are no longer tagged,
	// and the file hash memo.
	All bool
	// KeepStorage, if > 0, stops pruning once the store (blobs, records,
	// layers, build records, memo) uses at most this many bytes; entries go
	// least recently used first.
	KeepStorage int64
	// Until, if > 0, only removes entries unused for at least this long.
	Until time.Duration
	// InUse reports layers that must be kept (for example used by a
	// running build or an unpacked base image); nil means none.
	InUse func(diffID string) bool
	// RemoveLayer deletes a layer's unpacked directory (the snapshot
	// package owns them) and returns the bytes it freed. It is called for
	// a diffID once no remaining record, tagged image or InUse needs it.
	// nil leaves layers alone.
	RemoveLayer func(ctx context.Context, diffID string) (int64, error)
	// Sweep removes what another package records about blobs (the
	// exporter's compressed copies of layers and the repositories known to
	// hold a blob) once it serves nothing: needed(digest) reports whether
	// a blob is still in the store or named by a kept record or image.
	// It returns the bytes it freed; nil sweeps nothing.
	Sweep func(ctx context.Context, needed func(digest string) bool) (int64, error)
}

// PruneReport says what Prune did.
type PruneReport struct {
	Removed   int   // entries removed: records, blobs, layers, build records, memo shards
	Reclaimed int64 // bytes freed, including metadata files
	Left      int64 // the store's size afterwards, as KeepStorage counts it
}

// storedRecord is a record with its file, as Prune and DiskUsage see it.
type storedRecord struct {
	path string
	size int64
	rec  *Record
}

// Prune garbage-collects the store under the exclusive lock (so it waits
// for running builds, which hold RLock; don't call it while holding RLock).
// Nothing reachable from a tagged image is removed: its manifests, configs
// and layer blobs, and the records and layers of its diffIDs. Otherwise it
// removes, oldest first: blobs no record or image needs, then cache
// records by last use (Lookup refreshes it), each with the layer and blobs
// only it used. Until and KeepStorage limit what goes; see PruneOptions.
func (s *Store) Prune(ctx context.Context, opts PruneOptions) (PruneReport, error) {
	unlock, err := s.Lock(ctx)
	if err != nil {
		return PruneReport{}, fmt.Errorf("prune: %w", err)
	}
	defer unlock()
	rep, err := s.prune(ctx, opts)
	if err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	return rep, nil
}

// prune is Prune under the exclusive lock the caller holds.
func (s *Store) prune(ctx context.Context, opts PruneOptions) (PruneReport, error) {
	p, err := s.newPruner(ctx, opts)
	if err != nil {
		return PruneReport{}, err
	}
	err = p.run(ctx)
	p.report.Left = p.usage
	return p.report, err
}

type pruner struct {
	s        *Store
	opts     PruneOptions
	cutoff   time.Time // zero: no age limit
	keep     *reachable
	records  []storedRecord
	diffRefs map[string]int
	blobRefs map[string]int
	usage    int64
	report   PruneReport
}

func (s *Store) newPruner(ctx context.Context, opts PruneOptions) (*pruner, error) {
	p := &pruner{s: s, opts: opts, diffRefs: map[string]int{}, blobRefs: map[string]int{}}
	if opts.Until > 0 {
		p.cutoff = time.Now().Add(-opts.Until)
	}
	var err error
	if p.keep, err = s.reachableFromTags(ctx); err != nil {
		return nil, err
	}
	// Build records name the inputs blobs of their steps: keep them while
	// the build record lives, so `history` and explained misses still work.
	err = s.eachBuild(ctx, func(_ string, b *BuildRecord) error {
		for _, st := range b.Steps {
			if st.InputsDigest != "" {
				p.keep.blobs[st.InputsDigest] = true
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if p.records, err = s.loadRecords(ctx); err != nil {
		return nil, err
	}
	for _, r := range p.records {
		p.diffRefs[r.rec.DiffID]++
		for _, b := range r.rec.Blobs {
			p.blobRefs[b]++
		}
	}
	u, err := s.usage(ctx, p.records)
	if err != nil {
		return nil, err
	}
	p.usage = u.Total()
	return p, nil
}

func (p *pruner) run(ctx context.Context) error {
	if err := p.pruneOrphanBlobs(ctx); err != nil {
		return err
	}
	if err := p.pruneRecords(ctx); err != nil {
		return err
	}
	if err := p.sweep(ctx); err != nil {
		return err
	}
	if !p.opts.All {
		return nil
	}
	if err := p.pruneBuilds(ctx); err != nil {
		return err
	}
	return p.pruneFiles(ctx, p.s.hashes.dir)
}

// sweep lets opts.Sweep drop the records about blobs that are gone.
func (p *pruner) sweep(ctx context.Context) error {
	if p.opts.Sweep == nil {
		return nil
	}
	n, err := p.opts.Sweep(ctx, func(d string) bool {
		return p.keep.blobs[d] || p.blobRefs[d] > 0 || p.s.HasBlob(d)
	})
	p.report.Reclaimed += n
	p.usage -= n
	return err
}

// full reports whether pruning should go on.
func (p *pruner) full() bool {
	return p.opts.KeepStorage <= 0 || p.usage > p.opts.KeepStorage
}

func (p *pruner) old(t time.Time) bool { return p.cutoff.IsZero() || t.Before(p.cutoff) }

func (p *pruner) freed(n int64) {
	p.report.Removed++
	p.report.Reclaimed += n
	p.usage -= n
}

// pruneOrphanBlobs removes blobs that no tagged image or record needs,
// oldest first.
func (p *pruner) pruneOrphanBlobs(ctx context.Context) error {
	entries, err := readDirByAge(p.s.blobs)
	if err != nil {
		return err
	}
	for _, fi := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := "sha256:" + fi.Name()
		if !p.full() || !p.old(fi.ModTime()) || p.keep.blobs[d] || p.blobRefs[d] > 0 {
			continue
		}
		if err := p.s.RemoveBlob(ctx, d); err != nil {
			return err
		}
		p.freed(fi.Size())
	}
	return nil
}

// pruneRecords removes unprotected records least recently used first.
func (p *pruner) pruneRecords(ctx context.Context) error {
	recs := append([]storedRecord(nil), p.records...)
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].rec.LastUsed.Before(recs[j].rec.LastUsed) })
	for _, r := range recs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !p.full() {
			return nil
		}
		if !p.old(r.rec.LastUsed) || p.protected(r.rec.DiffID) {
			continue
		}
		if err := p.removeRecord(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

func (p *pruner) protected(diffID string) bool {
	if diffID == "" {
		return false
	}
	return p.keep.diffIDs[diffID] || (p.opts.InUse != nil && p.opts.InUse(diffID))
}

func (p *pruner) removeRecord(ctx context.Context, r storedRecord) error {
	if err := os.Remove(r.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	p.freed(r.size)
	if d := r.rec.DiffID; d != "" {
		p.diffRefs[d]--
		if p.diffRefs[d] == 0 && p.opts.RemoveLayer != nil {
			n, err := p.opts.RemoveLayer(ctx, d)
			if err != nil {
				return fmt.Errorf("remove layer %s: %w", d, err)
			}
			p.freed(n)
		}
	}
	for _, b := range r.rec.Blobs {
		p.blobRefs[b]--
		if p.blobRefs[b] > 0 || p.keep.blobs[b] {
			continue
		}
		n, err := p.s.BlobSize(b)
		if err != nil {
			continue // already gone
		}
		if err := p.s.RemoveBlob(ctx, b); err != nil {
			return err
		}
		p.freed(n)
	}
	return nil
}

// pruneBuilds removes build records whose image is no longer tagged.
func (p *pruner) pruneBuilds(ctx context.Context) error {
	err := p.s.eachBuild(ctx, func(path string, b *BuildRecord) error {
		if p.keep.images[b.ImageDigest] || !p.old(b.Finished) {
			return nil
		}
		fi, err := os.Stat(path)
		if err != nil {
			return nil
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		log := strings.TrimSuffix(path, ".json") + logSuffix
		n := fileSize(log)
		if err := os.Remove(log); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		p.freed(fi.Size() + n)
		return nil
	})
	if err != nil {
		return err
	}
	n, err := p.s.removeOrphans(ctx)
	p.report.Reclaimed += n
	p.usage -= n
	return err
}

// pruneFiles removes every regular file in dir.
func (p *pruner) pruneFiles(ctx context.Context, dir string) error {
	entries, err := readDirByAge(dir)
	if err != nil {
		return err
	}
	for _, fi := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := os.Remove(filepath.Join(dir, fi.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		p.freed(fi.Size())
	}
	return nil
}

// readDirByAge lists the regular files of dir, oldest mtime first.
func readDirByAge(dir string) ([]fs.FileInfo, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]fs.FileInfo, 0, len(entries))
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		out = append(out, fi)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ModTime().Before(out[j].ModTime()) })
	return out, nil
}

// loadRecords reads every key record. Undecodable records are removed by
// readRecord and skipped.
func (s *Store) loadRecords(ctx context.Context) ([]storedRecord, error) {
	entries, err := os.ReadDir(s.keys)
	if err != nil {
		return nil, err
	}
	var out []storedRecord
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		p := filepath.Join(s.keys, e.Name())
		rec, err := readRecord(p)
		if err != nil {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		out = append(out, storedRecord{path: p, size: fi.Size(), rec: rec})
	}
	return out, nil
}
