package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/docker/go-units"
)

// defaultPruneAge is what plain `builder prune` removes: entries unused
// for two days (as buildkitd's GC treats easily rebuilt data), so a prune
// never throws away the cache of the builds just made. --all, --filter
// until= or --keep-storage replace it.
const defaultPruneAge = 48 * time.Hour

// defaultKeepBuilds bounds the build records prune keeps.
const defaultKeepBuilds = 100

func cmdPrune(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "prune", "[OPTIONS]")
	all := fs.BoolP("all", "a", false, "remove all unused build cache whatever its age, RUN cache mounts and untagged build records")
	keep := fs.String("keep-storage", "", "remove least recently used entries until the store uses at most this much (e.g. 10GB)")
	var filters []string
	fs.StringArrayVar(&filters, "filter", nil, "filter: until=DURATION (only entries unused for longer; default 48h without --all and --keep-storage)")
	keepBuilds := fs.Int("keep-builds", defaultKeepBuilds, "keep only the N newest build records (and their logs)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *keepBuilds < 0 {
		return fmt.Errorf("--keep-builds %d: want a number of builds, 0 or more", *keepBuilds)
	}
	opts, err := pruneOptions(*all, *keep, filters)
	if err != nil {
		return err
	}
	st, err := a.open()
	if err != nil {
		return err
	}
	defer st.Close()
	// Build records go first, so the step inputs only they kept go in
	// the same prune.
	builds, buildBytes, err := st.cache.TrimBuilds(ctx, *keepBuilds)
	if err != nil {
		return err
	}
	// Prune takes the store's exclusive lock itself: it waits for running
	// builds, which hold the shared lock.
	opts.RemoveLayer, opts.Sweep = st.removeLayer, st.images.Sweep
	rep, err := st.cache.Prune(ctx, opts)
	if err != nil {
		return err
	}
	rep.Removed, rep.Reclaimed = rep.Removed+builds, rep.Reclaimed+buildBytes
	caches, freed, err := st.cache.PruneRunCache(ctx, opts.Until)
	if err != nil {
		return err
	}
	rep.Removed, rep.Reclaimed = rep.Removed+caches, rep.Reclaimed+freed
	stale, err := st.removeUnused(ctx)
	if err != nil {
		return err
	}
	rep.Reclaimed += stale
	fmt.Fprintf(a.stdout, "Removed %d cache entries\nTotal reclaimed space: %s\n", rep.Removed, units.HumanSize(float64(rep.Reclaimed)))
	return nil
}

// pruneOptions reads prune's flags.
func pruneOptions(all bool, keep string, filters []string) (cache.PruneOptions, error) {
	opts := cache.PruneOptions{All: all}
	if keep != "" {
		n, err := units.FromHumanSize(keep)
		if err != nil {
			return opts, fmt.Errorf("--keep-storage %q: %w", keep, err)
		}
		opts.KeepStorage = n
	}
	until := false
	for _, f := range filters {
		k, v, _ := splitKV(f)
		if k != "until" {
			return opts, fmt.Errorf("--filter %q: only until=DURATION is supported", f)
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return opts, fmt.Errorf("--filter %q: %w", f, err)
		}
		opts.Until, until = d, true
	}
	if !all && !until && opts.KeepStorage == 0 {
		opts.Until = defaultPruneAge
	}
	return opts, nil
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
	if err := tw.Flush(); err != nil {
		return err
	}
	return printGC(a.stdout, st)
}

// printGC shows the automatic garbage collection policy and its last run.
func printGC(w io.Writer, st *stores) error {
	p, err := st.gcPolicy()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nAutomatic GC ($BUILDER_GC_POLICY): %s\n", p)
	last, err := st.cache.LastGC()
	switch {
	case errors.Is(err, cache.ErrNotFound):
		fmt.Fprintln(w, "Last automatic GC: never")
	case err != nil:
		return err
	default:
		fmt.Fprintf(w, "Last automatic GC: %s: store %s, limit %s, removed %d entries, freed %s\n",
			last.Time.Local().Format(time.RFC3339), units.HumanSize(float64(last.Before)), units.HumanSize(float64(last.Keep)),
			last.Removed, units.HumanSize(float64(last.Reclaimed)))
	}
	return nil
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
