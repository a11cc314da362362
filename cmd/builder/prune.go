package main

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/docker/go-units"
)

func cmdPrune(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "prune", "[OPTIONS]")
	all := fs.BoolP("all", "a", false, "remove all unused build cache, not just the least recently used")
	keep := fs.String("keep-storage", "", "keep this much storage (e.g. 10GB)")
	var filters []string
	fs.StringArrayVar(&filters, "filter", nil, "filter: until=DURATION (entries unused for longer)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts := cache.PruneOptions{All: *all}
	if *keep != "" {
		n, err := units.FromHumanSize(*keep)
		if err != nil {
			return fmt.Errorf("--keep-storage %q: %w", *keep, err)
		}
		opts.KeepStorage = n
	}
	for _, f := range filters {
		k, v, _ := splitKV(f)
		if k != "until" {
			return fmt.Errorf("--filter %q: only until=DURATION is supported", f)
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("--filter %q: %w", f, err)
		}
		opts.Until = d
	}
	st, err := a.open()
	if err != nil {
		return err
	}
	defer st.Close()
	// Prune takes the store's exclusive lock itself: it waits for running
	// builds, which hold the shared lock.
	opts.RemoveLayer = func(ctx context.Context, diffID string) (int64, error) {
		size := dirSize(st.layers.Dir(diffID))
		return size, st.layers.Remove(ctx, diffID)
	}
	rep, err := st.cache.Prune(ctx, opts)
	if err != nil {
		return err
	}
	stale, err := st.removeUnused(ctx, *all)
	if err != nil {
		return err
	}
	rep.Reclaimed += stale
	fmt.Fprintf(a.stdout, "Removed %d cache entries\nTotal reclaimed space: %s\n", rep.Removed, units.HumanSize(float64(rep.Reclaimed)))
	return nil
}

func cmdDu(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "du", "")
	st, err := a.setup(fs, args, 0, 0)
	if err != nil {
		return err
	}
	defer st.Close()
	u, err := st.cache.DiskUsage(ctx)
	if err != nil {
		return err
	}
	layers, err := st.layers.DiskUsage(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "KIND\tSIZE")
	fmt.Fprintf(tw, "layers\t%s\n", units.HumanSize(float64(layers)))
	fmt.Fprintf(tw, "blobs\t%s\n", units.HumanSize(float64(u.Blobs)))
	fmt.Fprintf(tw, "cache records\t%s\n", units.HumanSize(float64(u.Keys)))
	fmt.Fprintf(tw, "build records\t%s\n", units.HumanSize(float64(u.Builds)))
	fmt.Fprintf(tw, "hash memo\t%s\n", units.HumanSize(float64(u.Hashes)))
	runCache := dirSize(st.cache.AreaPath(cache.RunCache))
	fmt.Fprintf(tw, "RUN cache mounts\t%s\n", units.HumanSize(float64(runCache)))
	fmt.Fprintf(tw, "total\t%s\n", units.HumanSize(float64(layers+u.Blobs+u.Keys+u.Builds+u.Hashes+runCache)))
	return tw.Flush()
}

func splitKV(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '=' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// dirSize is the disk space taken by the files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, ierr := d.Info(); ierr == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
