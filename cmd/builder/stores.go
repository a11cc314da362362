package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/exporter"
	"github.com/builder-dev/builder/snapshot"
)

// stores are the parts of the store root, opened together.
type stores struct {
	cache  *cache.Store
	layers *snapshot.LayerStore
	images *exporter.Store
	unlock func() // set by lockShared, called by Close
}

func (a *app) open() (*stores, error) {
	c, err := cache.Open(a.root)
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

// removeUnused reports what killed commands left in the scratch areas (tmp/
// and active/: Open removed it, as any command does), removes the active
// snapshots older builders left, and, with all, deletes the RUN
// --mount=type=cache directories. It holds the store's exclusive
// lock, so no build is running. It returns the bytes reclaimed.
func (s *stores) removeUnused(ctx context.Context, all bool) (int64, error) {
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
	n += legacy
	if err != nil || !all {
		return n, err
	}
	dir, err := s.cache.Dir(cache.RunCache)
	if err != nil {
		return n, err
	}
	m, err := removeChildren(ctx, dir)
	return n + m, err
}

// removeChildren removes everything inside dir, returning the bytes freed.
func removeChildren(ctx context.Context, dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		p := filepath.Join(dir, e.Name())
		size := dirSize(p)
		if err := os.RemoveAll(p); err != nil {
			return n, fmt.Errorf("remove %s: %w", p, err)
		}
		n += size
	}
	return n, nil
}

// closeScratch removes a scratch directory at the end of a command, keeping
// the command's own error if it has one.
func closeScratch(sc *cache.Scratch, err *error) {
	if cerr := sc.Close(); cerr != nil && *err == nil {
		*err = cerr
	}
}
