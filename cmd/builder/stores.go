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

func (s *stores) Close() error { return s.cache.Close() }

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
