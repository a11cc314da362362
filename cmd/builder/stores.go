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
	ls, err := snapshot.OpenLayerStore(filepath.Join(c.Root(), "snapshots"))
	if err != nil {
		c.Close()
		return nil, err
	}
	return &stores{cache: c, layers: ls, images: exporter.NewStore(c, ls)}, nil
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

// snapshotter returns the snapshotter to use: overlay unless asked for copy
// or overlayfs cannot be mounted here, in which case it says so once.
func (s *stores) snapshotter(ctx context.Context, kind string, notice func(string)) (snapshot.Snapshotter, error) {
	active := filepath.Join(s.cache.Root(), "active")
	if err := os.MkdirAll(active, 0o700); err != nil {
		return nil, err
	}
	switch kind {
	case "copy":
		return snapshot.NewCopy(s.layers, active)
	case "overlay":
		return snapshot.NewOverlay(s.layers, active)
	case "", "auto":
		if err := snapshot.CheckOverlay(ctx, active); err != nil {
			notice(fmt.Sprintf("overlayfs unavailable (%v); using the copy snapshotter", err))
			return snapshot.NewCopy(s.layers, active)
		}
		return snapshot.NewOverlay(s.layers, active)
	}
	return nil, fmt.Errorf("unknown snapshotter %q (want overlay, copy or auto)", kind)
}

// removeUnused deletes what killed builds left under active/ (snapshots that
// were never committed or removed) and, with all, the RUN --mount=type=cache
// directories under runcache/. It holds the store's exclusive lock, so no
// build is running; their mounts died with their mount namespaces. It
// returns the bytes reclaimed.
func (s *stores) removeUnused(ctx context.Context, all bool) (int64, error) {
	unlock, err := s.cache.Lock(ctx)
	if err != nil {
		return 0, err
	}
	defer unlock()
	dirs := []string{"active"}
	if all {
		dirs = append(dirs, "runcache")
	}
	var n int64
	for _, d := range dirs {
		m, err := removeChildren(ctx, filepath.Join(s.cache.Root(), d))
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
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
