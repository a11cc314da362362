package cache

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultGCPolicy(t *testing.T) {
	for _, tc := range []struct {
		disk DiskStat
		want GCPolicy
	}{
		// A 50 GB disk: 10% reserved, 80% max, 20% free.
		{DiskStat{Total: 50e9}, GCPolicy{ReservedSpace: 5e9, MaxUsedSpace: 40e9, MinFreeSpace: 10e9, Interval: time.Hour}},
		// A 2 TB disk: the byte caps win (10 GB, 100 GB); free stays 20%.
		{DiskStat{Total: 2e12}, GCPolicy{ReservedSpace: 10e9, MaxUsedSpace: 100e9, MinFreeSpace: 400e9, Interval: time.Hour}},
	} {
		if diff := cmp.Diff(tc.want, DefaultGCPolicy(tc.disk)); diff != "" {
			t.Errorf("disk %+v (-want +got):\n%s", tc.disk, diff)
		}
	}
}

func TestParseGCPolicy(t *testing.T) {
	disk := DiskStat{Total: 100e9}
	def := DefaultGCPolicy(disk)
	for _, tc := range []struct {
		in   string
		want GCPolicy
	}{
		{"", def},
		{"off", GCPolicy{Off: true, ReservedSpace: def.ReservedSpace, MaxUsedSpace: def.MaxUsedSpace, MinFreeSpace: def.MinFreeSpace, Interval: time.Hour}},
		{"max-used=20GB, reserved=1GiB", GCPolicy{ReservedSpace: 1 << 30, MaxUsedSpace: 20 << 30, MinFreeSpace: 20e9, Interval: time.Hour}},
		{"min-free=5%,max-used=0,interval=10m", GCPolicy{ReservedSpace: 10e9, MaxUsedSpace: 0, MinFreeSpace: 5e9, Interval: 10 * time.Minute}},
	} {
		got, err := ParseGCPolicy(tc.in, disk)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tc.in, diff)
		}
	}
	for in, want := range map[string]string{
		"max-used":          "is not KEY=VALUE",
		"max-used=lots":     "max-used",
		"min-free=150%":     "not a percentage",
		"keep=1GB":          "unknown key",
		"interval=sometime": "interval",
	} {
		if _, err := ParseGCPolicy(in, disk); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", in, err, want)
		}
	}
}

// KeepBytes follows buildkitd: the cap, lowered by what the disk lacks of
// its free-space target, never under the reserve.
func TestGCKeepBytes(t *testing.T) {
	p := GCPolicy{ReservedSpace: 10, MaxUsedSpace: 100, MinFreeSpace: 50}
	for _, tc := range []struct {
		used, free, want int64
	}{
		{used: 80, free: 500, want: 100}, // enough free space: the cap
		{used: 80, free: 30, want: 60},   // 20 short of free: keep 80-20
		{used: 80, free: 0, want: 30},    // 50 short
		{used: 20, free: 0, want: 10},    // never under the reserve
	} {
		if got := p.KeepBytes(tc.used, DiskStat{Total: 1000, Free: tc.free}); got != tc.want {
			t.Errorf("used %d, free %d: keep %d, want %d", tc.used, tc.free, got, tc.want)
		}
	}
	if got := (GCPolicy{}).KeepBytes(1e12, DiskStat{}); got != 0 {
		t.Errorf("no caps: keep %d, want 0 (unbounded)", got)
	}
}

// An automatic collection removes, while the store is over its cap,
// entries unused for 60 days first, then the least recently used; never a
// tagged image's; it records what it did and does not run again within
// its interval.
func TestAutoGC(t *testing.T) {
	f := newPruneFixture(t)
	ctx := t.Context()
	// r2 has not been used for 70 days: it goes in the stale pass even
	// though r0 (tagged) is older in the LRU order of the fixture.
	rec, err := f.s.Lookup(ctx, f.keys[2])
	if err != nil {
		t.Fatal(err)
	}
	rec.LastUsed = time.Now().Add(-70 * 24 * time.Hour)
	if err := f.s.Put(ctx, rec); err != nil {
		t.Fatal(err)
	}
	u, err := f.s.DiskUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Allow all but 8,000 bytes: the stale record (1,000 bytes of layer,
	// its 5,000-byte blob and its record file) is not enough, the LRU pass
	// then takes r3 (used 8h ago, before r1 at 7h).
	p := GCPolicy{MaxUsedSpace: u.Total() - 8000, Interval: time.Hour}
	rep, ran, err := f.s.AutoGC(ctx, p, PruneOptions{RemoveLayer: f.layers.remove})
	if err != nil || !ran {
		t.Fatalf("AutoGC: ran %v, %v", ran, err)
	}
	if want := []bool{true, true, false, false}; !cmp.Equal(f.present(t), want) {
		t.Errorf("records present %v, want %v (r0 tagged, r1 newest kept)", f.present(t), want)
	}
	if rep.Removed == 0 || rep.Reclaimed < 8000 || rep.Before != u.Total() || rep.Keep != p.MaxUsedSpace {
		t.Errorf("report %+v", rep)
	}
	last, err := f.s.LastGC()
	if err != nil || last.Removed != rep.Removed || !last.Time.Equal(rep.Time) {
		t.Errorf("LastGC = %+v, %v; want %+v", last, err, rep)
	}
	// Due again only after the interval, even if over the cap.
	p.MaxUsedSpace = 1
	if _, ran, err := f.s.AutoGC(ctx, p, PruneOptions{}); ran || err != nil {
		t.Errorf("second AutoGC within the interval: ran %v, %v", ran, err)
	}
	if want := []bool{true, true, false, false}; !cmp.Equal(f.present(t), want) {
		t.Errorf("records present %v after a GC that was not due", f.present(t))
	}
}

// AutoGC never waits for a command holding the store, and never runs
// while one does.
func TestAutoGCSkipsBusyStore(t *testing.T) {
	f := newPruneFixture(t)
	unlock, err := f.s.RLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	done := make(chan bool, 1)
	go func() {
		_, ran, err := f.s.AutoGC(t.Context(), GCPolicy{MaxUsedSpace: 1, Interval: time.Hour}, PruneOptions{})
		if err != nil {
			t.Error(err)
		}
		done <- ran
	}()
	select {
	case ran := <-done:
		if ran {
			t.Error("AutoGC ran while a build held the shared lock")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("AutoGC waited for the shared lock")
	}
	if want := []bool{true, true, true, true}; !cmp.Equal(f.present(t), want) {
		t.Errorf("records present %v", f.present(t))
	}
	if _, err := f.s.LastGC(); !errors.Is(err, ErrNotFound) {
		t.Errorf("LastGC after a skipped collection: %v", err)
	}
}

// RUN cache mounts age by their lock file (touched by every user), else
// by their directory; an automatic collection removes the unused ones when
// they take more than their budget and the store is over its cap.
func TestPruneRunCache(t *testing.T) {
	s := openStore(t)
	dir, err := s.Dir(RunCache)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	mk := func(name string, size int, lockAge, dirAge time.Duration) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(p, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "sub", "f"), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		if lockAge >= 0 {
			if err := os.WriteFile(p+".lock", nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p+".lock", now.Add(-lockAge), now.Add(-lockAge)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chtimes(p, now.Add(-dirAge), now.Add(-dirAge)); err != nil {
			t.Fatal(err)
		}
	}
	mk("fresh", 100, time.Hour, 100*time.Hour) // lock touched an hour ago
	mk("old", 200, 72*time.Hour, time.Minute)  // lock 3 days old
	mk("nolock", 300, -1, 50*time.Hour)        // no lock: the directory's time
	n, freed, err := s.PruneRunCache(t.Context(), 48*time.Hour)
	if err != nil || n != 2 || freed != 500 {
		t.Errorf("PruneRunCache(48h) = %d, %d, %v; want 2 caches, 500 bytes", n, freed, err)
	}
	for name, want := range map[string]bool{"fresh": true, "old": false, "nolock": false, "old.lock": false, "fresh.lock": true} {
		if _, err := os.Stat(filepath.Join(dir, name)); (err == nil) != want {
			t.Errorf("%s present: %v, want %v", name, err == nil, want)
		}
	}
	if n, _, err := s.PruneRunCache(t.Context(), 0); err != nil || n != 1 {
		t.Errorf("PruneRunCache(0) removed %d, %v; want the last one", n, err)
	}
}
