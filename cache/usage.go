package cache

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Usage is the store's disk use in bytes (apparent file sizes).
type Usage struct {
	Blobs      int64 // blobs/
	Keys       int64 // keys/ record files
	Layers     int64 // distinct layers named by records, by their recorded size
	Images     int64 // images/ index
	Builds     int64 // builds/
	Hashes     int64 // hashes/ memo
	Tmp        int64 // tmp/ files being written or left by crashes
	BlobCount  int
	KeyCount   int
	BuildCount int
}

// Total is the sum of all byte counts.
func (u Usage) Total() int64 {
	return u.Blobs + u.Keys + u.Layers + u.Images + u.Builds + u.Hashes + u.Tmp
}

// DiskUsage measures the store. Layer directories belong to the snapshot
// package; Layers counts their tar size as recorded in key records.
func (s *Store) DiskUsage(ctx context.Context) (Usage, error) {
	recs, err := s.loadRecords(ctx)
	if err != nil {
		return Usage{}, fmt.Errorf("disk usage %s: %w", s.root, err)
	}
	u, err := s.usage(ctx, recs)
	if err != nil {
		return Usage{}, fmt.Errorf("disk usage %s: %w", s.root, err)
	}
	return u, nil
}

func (s *Store) usage(ctx context.Context, recs []storedRecord) (Usage, error) {
	var u Usage
	seen := map[string]bool{}
	for _, r := range recs {
		u.Keys += r.size
		u.KeyCount++
		if d := r.rec.DiffID; d != "" && !seen[d] {
			seen[d] = true
			u.Layers += r.rec.Size
		}
	}
	dirs := []struct {
		dir   string
		bytes *int64
		count *int
	}{
		{s.blobs, &u.Blobs, &u.BlobCount},
		{s.images, &u.Images, nil},
		{s.builds, &u.Builds, &u.BuildCount},
		{s.hashes.dir, &u.Hashes, nil},
		{s.tmp, &u.Tmp, nil},
	}
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			return Usage{}, err
		}
		n, c, err := dirSize(d.dir)
		if err != nil {
			return Usage{}, err
		}
		*d.bytes = n
		if d.count != nil {
			*d.count = c
		}
	}
	return u, nil
}

// dirSize sums the sizes of the regular files directly in dir.
func dirSize(dir string) (int64, int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	var n int64
	var c int
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if filepath.Ext(e.Name()) == ".lock" {
			continue
		}
		n += fi.Size()
		c++
	}
	return n, c, nil
}
