package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"
	"golang.org/x/sys/unix"
)

// GCPolicy bounds the store's size. After a build, AutoGC applies it the
// way buildkitd's default garbage collection does: when the store holds
// more than KeepBytes allows, it removes first RUN cache mounts unused for
// two days, then entries unused for 60 days, then entries least recently
// used first, then build records of untagged images and the hash memo —
// each pass only as far as needed, never what a tagged image needs.
type GCPolicy struct {
	// Off disables automatic collection (`builder prune` still works).
	Off bool
	// ReservedSpace is never freed: the store may always keep this much.
	ReservedSpace int64
	// MaxUsedSpace caps the store; 0 means no cap.
	MaxUsedSpace int64
	// MinFreeSpace is the free space the disk should keep: when it has
	// less, the store shrinks by the difference (down to ReservedSpace).
	MinFreeSpace int64
	// Interval is the least time between two automatic collections, so
	// that most builds pay only for reading when the last one ran.
	Interval time.Duration
}

// DiskStat is the size and free space of the file system of a store.
type DiskStat struct{ Total, Free int64 }

// StatDisk returns the file system statistics of path.
func StatDisk(path string) (DiskStat, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return DiskStat{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := int64(st.Bsize)
	return DiskStat{Total: int64(st.Blocks) * bs, Free: int64(st.Bavail) * bs}, nil
}

// Defaults of the automatic collection, as buildkitd's: keep 10% of the
// disk (at most 10 GB), use at most 80% (at most 100 GB), leave 20% free;
// RUN cache mounts over 512 MB lose what was unused for 48 hours, and any
// entry unused for 60 days goes first.
const (
	defaultReservedPercent = 10
	defaultReservedMax     = 10e9
	defaultMaxUsedPercent  = 80
	defaultMaxUsedMax      = 100e9
	defaultMinFreePercent  = 20
	defaultGCInterval      = time.Hour
	runCacheKeep           = 48 * time.Hour
	runCacheBudget         = 512e6
	staleAge               = 60 * 24 * time.Hour
)

// DefaultGCPolicy is buildkitd's default for a disk like d.
func DefaultGCPolicy(d DiskStat) GCPolicy {
	return GCPolicy{
		ReservedSpace: min(d.Total*defaultReservedPercent/100, defaultReservedMax),
		MaxUsedSpace:  min(d.Total*defaultMaxUsedPercent/100, defaultMaxUsedMax),
		MinFreeSpace:  d.Total * defaultMinFreePercent / 100,
		Interval:      defaultGCInterval,
	}
}

// ParseGCPolicy reads a policy over the defaults for d: "off", or
// comma-separated reserved=SIZE, max-used=SIZE, min-free=SIZE (bytes as
// "10GB" or "512MiB", or a share of the disk as "20%"; 0 disables that
// bound) and interval=DURATION. "" is the default policy.
func ParseGCPolicy(s string, d DiskStat) (GCPolicy, error) {
	p := DefaultGCPolicy(d)
	s = strings.TrimSpace(s)
	if s == "" {
		return p, nil
	}
	if s == "off" || s == "false" {
		p.Off = true
		return p, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return GCPolicy{}, fmt.Errorf("gc policy %q: %q is not KEY=VALUE", s, kv)
		}
		var err error
		switch k {
		case "reserved":
			p.ReservedSpace, err = parseSpace(v, d)
		case "max-used":
			p.MaxUsedSpace, err = parseSpace(v, d)
		case "min-free":
			p.MinFreeSpace, err = parseSpace(v, d)
		case "interval":
			p.Interval, err = time.ParseDuration(v)
		default:
			err = errors.New("unknown key (want reserved, max-used, min-free or interval)")
		}
		if err != nil {
			return GCPolicy{}, fmt.Errorf("gc policy %q: %s: %w", s, k, err)
		}
	}
	return p, nil
}

func parseSpace(v string, d DiskStat) (int64, error) {
	if pct, ok := strings.CutSuffix(v, "%"); ok {
		n, err := strconv.ParseInt(pct, 10, 64)
		if err != nil || n < 0 || n > 100 {
			return 0, fmt.Errorf("%q is not a percentage of the disk", v)
		}
		return d.Total * n / 100, nil
	}
	return units.RAMInBytes(v)
}

// String describes the policy for people.
func (p GCPolicy) String() string {
	if p.Off {
		return "off"
	}
	size := func(n int64) string {
		if n == 0 {
			return "none"
		}
		return units.HumanSize(float64(n))
	}
	return fmt.Sprintf("max-used %s, reserved %s, min-free %s, at most every %s",
		size(p.MaxUsedSpace), size(p.ReservedSpace), size(p.MinFreeSpace), p.Interval)
}

// KeepBytes is how many bytes the store may keep when it uses used bytes
// on disk d: at most MaxUsedSpace, less by what the disk lacks of
// MinFreeSpace, never less than ReservedSpace. 0 means no bound.
func (p GCPolicy) KeepBytes(used int64, d DiskStat) int64 {
	if p.MaxUsedSpace == 0 && p.MinFreeSpace == 0 {
		return 0
	}
	keep := p.MaxUsedSpace
	if lack := p.MinFreeSpace - d.Free; lack > 0 {
		if keep == 0 {
			keep = used - lack
		} else {
			keep = min(keep, used-lack)
		}
	}
	return max(keep, p.ReservedSpace, 1)
}

// GCReport is what an automatic collection did; it is kept in
// <root>/gc.json and shown by `builder du`.
type GCReport struct {
	Time      time.Time `json:"time"`
	Before    int64     `json:"before"`    // store size when it started
	Keep      int64     `json:"keep"`      // what the policy allowed
	Removed   int       `json:"removed"`   // entries removed
	Reclaimed int64     `json:"reclaimed"` // bytes freed
}

const gcFile = "gc.json"

// LastGC returns the report of the last automatic collection, or
// ErrNotFound.
func (s *Store) LastGC() (GCReport, error) {
	data, err := os.ReadFile(filepath.Join(s.root, gcFile))
	if errors.Is(err, os.ErrNotExist) {
		return GCReport{}, ErrNotFound
	}
	if err != nil {
		return GCReport{}, err
	}
	var r GCReport
	if err := json.Unmarshal(data, &r); err != nil {
		return GCReport{}, fmt.Errorf("read %s: %w", filepath.Join(s.root, gcFile), err)
	}
	return r, nil
}

// AutoGC applies p if a collection is due (none ran in the last
// p.Interval) and no other command is using the store: it takes the
// exclusive lock only if it is free at once, so it never waits for a
// running build (the caller must not hold the shared lock itself). ran
// says whether it collected. opts carries the hooks of Prune (InUse,
// RemoveLayer); its other fields are ignored.
func (s *Store) AutoGC(ctx context.Context, p GCPolicy, opts PruneOptions) (rep GCReport, ran bool, err error) {
	if p.Off || !s.gcDue(p) {
		return GCReport{}, false, nil
	}
	unlock, err := flockNow(filepath.Join(s.root, "lock"), unix.LOCK_EX)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return GCReport{}, false, nil
	}
	if err != nil {
		return GCReport{}, false, fmt.Errorf("gc: %w", err)
	}
	defer unlock()
	if !s.gcDue(p) { // another process collected while we looked
		return GCReport{}, false, nil
	}
	rep, err = s.collect(ctx, p, opts)
	if err != nil {
		return rep, true, fmt.Errorf("gc: %w", err)
	}
	data, err := json.Marshal(rep)
	if err == nil {
		err = s.writeFileAtomic(ctx, s.root, gcFile, data)
	}
	return rep, true, err
}

func (s *Store) gcDue(p GCPolicy) bool {
	last, err := s.LastGC()
	return err != nil || time.Since(last.Time) >= p.Interval
}

// collect runs the passes of the policy under the exclusive lock.
func (s *Store) collect(ctx context.Context, p GCPolicy, opts PruneOptions) (GCReport, error) {
	d, err := StatDisk(s.root)
	if err != nil {
		return GCReport{}, err
	}
	u, err := s.DiskUsage(ctx)
	if err != nil {
		return GCReport{}, err
	}
	runCache := s.runCacheUsage()
	used := u.Total() + runCache
	rep := GCReport{Time: time.Now().UTC(), Before: used, Keep: p.KeepBytes(used, d)}
	if rep.Keep == 0 || used <= rep.Keep {
		return rep, nil
	}
	if over := used - rep.Keep; runCache > runCacheBudget {
		n, freed, err := s.pruneRunCache(ctx, runCacheKeep, min(over, runCache-runCacheBudget))
		rep.Removed, rep.Reclaimed = rep.Removed+n, rep.Reclaimed+freed
		runCache -= freed
		if err != nil {
			return rep, err
		}
	}
	// What the entries of the store may keep beside the RUN cache mounts;
	// each pass stops as soon as they fit.
	keep := max(rep.Keep-runCache, 1)
	for _, pass := range []PruneOptions{{Until: staleAge}, {}, {All: true}} {
		pass.KeepStorage, pass.InUse, pass.RemoveLayer, pass.Sweep = keep, opts.InUse, opts.RemoveLayer, opts.Sweep
		pr, err := s.prune(ctx, pass)
		rep.Removed, rep.Reclaimed = rep.Removed+pr.Removed, rep.Reclaimed+pr.Reclaimed
		if err != nil || pr.Left <= keep {
			return rep, err
		}
	}
	return rep, nil
}

// runCacheUsage is the size of the RUN cache mounts.
func (s *Store) runCacheUsage() int64 {
	return treeSize(s.AreaPath(RunCache))
}

// PruneRunCache removes RUN --mount=type=cache directories unused for at
// least unused (all of them when 0), under the exclusive lock. A cache's
// last use is the time of its lock file, which every user touches.
func (s *Store) PruneRunCache(ctx context.Context, unused time.Duration) (int, int64, error) {
	unlock, err := s.Lock(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer unlock()
	return s.pruneRunCache(ctx, unused, -1)
}

// pruneRunCache removes caches unused for at least unused, least recently
// used first, until limit bytes are freed (limit < 0: no limit).
func (s *Store) pruneRunCache(ctx context.Context, unused time.Duration, limit int64) (int, int64, error) {
	caches, err := s.runCaches()
	if err != nil {
		return 0, 0, err
	}
	cutoff := time.Now().Add(-unused)
	var removed int
	var freed int64
	for _, c := range caches {
		if err := ctx.Err(); err != nil {
			return removed, freed, err
		}
		if c.used.After(cutoff) || (limit >= 0 && freed >= limit) {
			continue
		}
		n := treeSize(c.path)
		if err := removeTree(c.path); err != nil {
			return removed, freed, fmt.Errorf("remove RUN cache %s: %w", c.path, err)
		}
		if err := os.Remove(c.path + ".lock"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, freed, err
		}
		removed++
		freed += n
	}
	return removed, freed, nil
}

type runCache struct {
	path string
	used time.Time
}

// runCaches lists the RUN cache directories, least recently used first.
// A cache's last use is the time of its lock file, which every user
// touches; without one, the directory's.
func (s *Store) runCaches() ([]runCache, error) {
	dir := s.AreaPath(RunCache)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []runCache
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".lock") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		fi, err := os.Lstat(p + ".lock")
		if err != nil {
			fi, err = e.Info()
		}
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, runCache{path: p, used: fi.ModTime()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].used.Before(out[j].used) })
	return out, nil
}

// removeTree removes p, making its directories writable first if a plain
// RemoveAll cannot (a RUN may leave 0500 directories in a cache).
func removeTree(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	_ = filepath.WalkDir(p, func(q string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// flockNow takes a flock on path without waiting; EWOULDBLOCK when held.
func flockNow(path string, how int) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, filePerm)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
