package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/exporter"
	"github.com/builder-dev/builder/snapshot"
	"github.com/docker/go-units"
)

// stores are the parts of the store root, opened together.
type stores struct {
	cache  *cache.Store
	layers *snapshot.LayerStore
	images *exporter.Store
	unlock func() // set by lockShared, called by Close
}

// openCache opens the cache store at --root (defaultRoot when not given).
func (a *app) openCache() (*cache.Store, error) {
	if a.root == "" {
		return nil, errors.New("no store directory: HOME and XDG_DATA_HOME are not set and the user has no home directory; pass --root DIR")
	}
	return cache.Open(a.root)
}

func (a *app) open() (*stores, error) {
	c, err := a.openCache()
	if err != nil {
		return nil, err
	}
	dir, err := c.Dir(cache.Snapshots)
	if err != nil {
		c.Close()
		return nil, err
	}
	ls, err := snapshot.OpenLayerStore(dir, snapshot.WithScratch(c.ScratchDir))
	if err != nil {
		c.Close()
		return nil, err
	}
	images := exporter.NewStore(c, ls)
	// A layer hit in a remote cache is fetched when a snapshot needs it.
	ls.SetFetcher(images.Materialize)
	return &stores{cache: c, layers: ls, images: images}, nil
}

// Close releases the shared lock, if held, and closes the store.
func (s *stores) Close() error {
	if s.unlock != nil {
		s.unlock()
		s.unlock = nil
	}
	return s.cache.Close()
}

// lockShared holds the store's shared lock until Close: commands that add
// to the store take it so that prune (exclusive) waits for them.
func (s *stores) lockShared(ctx context.Context) error {
	unlock, err := s.cache.RLock(ctx)
	if err != nil {
		return err
	}
	s.unlock = unlock
	return nil
}

// snapshotter returns the snapshotter to use, keeping its active snapshots
// in active (a scratch directory of the build): overlay unless asked for
// copy or overlayfs cannot be mounted here, in which case it says so once.
func snapshotter(ctx context.Context, layers *snapshot.LayerStore, active, kind string, notice func(string)) (snapshot.Snapshotter, error) {
	switch kind {
	case "copy":
		return snapshot.NewCopy(layers, active)
	case "overlay":
		return snapshot.NewOverlay(layers, active)
	case "", "auto":
		if err := snapshot.CheckOverlay(ctx, active); err != nil {
			notice(fmt.Sprintf("overlayfs unavailable (%v); using the copy snapshotter", err))
			return snapshot.NewCopy(layers, active)
		}
		return snapshot.NewOverlay(layers, active)
	}
	return nil, fmt.Errorf("unknown snapshotter %q (want overlay, copy or auto)", kind)
}

// removeLayer deletes a layer's directory for the cache's prune and GC,
// returning the bytes it held.
func (s *stores) removeLayer(ctx context.Context, diffID string) (int64, error) {
	size := dirSize(s.layers.Dir(diffID))
	return size, s.layers.Remove(ctx, diffID)
}

// gcPolicy is the automatic garbage collection policy of the store:
// buildkitd's defaults for its disk, changed by $BUILDER_GC_POLICY.
func (s *stores) gcPolicy() (cache.GCPolicy, error) {
	d, err := cache.StatDisk(s.cache.Root())
	if err != nil {
		return cache.GCPolicy{}, err
	}
	p, err := cache.ParseGCPolicy(os.Getenv("BUILDER_GC_POLICY"), d)
	if err != nil {
		return cache.GCPolicy{}, fmt.Errorf("$BUILDER_GC_POLICY: %w", err)
	}
	return p, nil
}

// collectGarbage ends a command that added to the store: it releases the
// shared lock and applies the GC policy if a collection is due and no
// other command uses the store (it never waits). A failed collection is a
// warning: the command's own work is done.
func (s *stores) collectGarbage(ctx context.Context, p cache.GCPolicy, notice func(string)) {
	if ctx.Err() != nil {
		return
	}
	if s.unlock != nil {
		s.unlock()
		s.unlock = nil
	}
	rep, ran, err := s.cache.AutoGC(ctx, p, cache.PruneOptions{RemoveLayer: s.removeLayer, Sweep: s.images.Sweep})
	switch {
	case err != nil:
		notice(fmt.Sprintf("[warning] automatic garbage collection: %v", err))
	case ran && rep.Removed > 0:
		notice(fmt.Sprintf("automatic garbage collection: the store used %s, over the %s its policy allows (%s): removed %d entries, freed %s",
			units.HumanSize(float64(rep.Before)), units.HumanSize(float64(rep.Keep)), p, rep.Removed, units.HumanSize(float64(rep.Reclaimed))))
	}
}

// removeUnused reports what killed commands left in the scratch areas (tmp/
// and active/: Open removed it, as any command does) and removes the active
// snapshots older builders left. It holds the store's exclusive lock, so no
// build is running. It returns the bytes reclaimed.
func (s *stores) removeUnused(ctx context.Context) (int64, error) {
	unlock, err := s.cache.Lock(ctx)
	if err != nil {
		return 0, err
	}
	defer unlock()
	n, err := s.cache.CleanScratch()
	n += s.cache.ScratchFreedAtOpen()
	if err != nil {
		return n, err
	}
	legacy, err := s.cache.RemoveLegacyActive(ctx)
	return n + legacy, err
}

// closeScratch removes a scratch directory at the end of a command, keeping
// the command's own error if it has one.
func closeScratch(sc *cache.Scratch, err *error) {
	if cerr := sc.Close(); cerr != nil && *err == nil {
		*err = cerr
	}
}
