package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// pruneFixture is a store with four records, used at different times and
// not in the order they were written, one of which belongs to a tagged
// image, plus an orphan blob.
type pruneFixture struct {
	s       *Store
	keys    []Key    // r0 (image layer, oldest) .. r3 (newest)
	diffIDs []string // per record
	blobs   []string // per record: a blob only that record needs
	orphan  string
	image   []string // manifest, config
	layers  *layerLog
}

type layerLog struct {
	mu      sync.Mutex
	removed []string
}

func (l *layerLog) remove(_ context.Context, diffID string) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.removed = append(l.removed, diffID)
	return 1000, nil
}

func newPruneFixture(t *testing.T) *pruneFixture {
	t.Helper()
	s := openStore(t)
	ctx := t.Context()
	f := &pruneFixture{s: s, layers: &layerLog{}}
	now := time.Now()
	// Last used: r0 (the tagged image's layer) 10h ago, r1 7h, r2 9h, r3 8h.
	ages := []time.Duration{-10 * time.Hour, -7 * time.Hour, -9 * time.Hour, -8 * time.Hour}
	for i := range 4 {
		f.diffIDs = append(f.diffIDs, digestOf(fmt.Appendf(nil, "layer %d", i)))
		f.blobs = append(f.blobs, mustWriteBlob(t, s, []byte(strings.Repeat(fmt.Sprint(i), 5000))))
		k := KeyOf(Key{}, Inputs{Op: "RUN", Fields: []Field{{Name: "instruction", Value: fmt.Sprint("RUN ", i)}}})
		f.keys = append(f.keys, k)
		if err := s.Put(ctx, &Record{Key: k, DiffID: f.diffIDs[i], Size: 1000, Blobs: []string{f.blobs[i]}, LastUsed: now.Add(ages[i])}); err != nil {
			t.Fatal(err)
		}
	}
	cfg, _ := json.Marshal(map[string]any{"rootfs": map[string]any{"type": "layers", "diff_ids": []string{f.diffIDs[0]}}})
	cfgDigest := mustWriteBlob(t, s, cfg)
	m := writeManifest(t, s, cfgDigest, f.blobs[0])
	f.image = []string{m, cfgDigest}
	if err := s.SetTag(ctx, "app:v1", m); err != nil {
		t.Fatal(err)
	}
	f.orphan = mustWriteBlob(t, s, []byte("orphan"))
	old := now.Add(-20 * time.Hour)
	if err := os.Chtimes(s.blobs+"/"+f.orphan[7:], old, old); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *pruneFixture) present(t *testing.T) []bool {
	t.Helper()
	var out []bool
	for _, k := range f.keys {
		_, err := os.Stat(f.s.keyPath(k))
		out = append(out, err == nil)
	}
	return out
}

func TestPruneKeepStorageLRU(t *testing.T) {
	f := newPruneFixture(t)
	ctx := t.Context()
	u, err := f.s.DiskUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.KeyCount != 4 || u.Layers != 4000 || u.BlobCount != 7 || u.Blobs == 0 || u.Images == 0 {
		t.Fatalf("DiskUsage = %+v", u)
	}
	// Room for everything but about one record with its blob and layer.
	rep, err := f.s.Prune(ctx, PruneOptions{KeepStorage: u.Total() - 3000, RemoveLayer: f.layers.remove})
	if err != nil {
		t.Fatal(err)
	}
	// The orphan goes first, then r2, the least recently used record that
	// is not the tagged image's layer (r0).
	if diff := cmp.Diff([]bool{true, true, false, true}, f.present(t)); diff != "" {
		t.Errorf("records present (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{f.diffIDs[2]}, f.layers.removed); diff != "" {
		t.Errorf("layers removed (-want +got):\n%s", diff)
	}
	if f.s.HasBlob(f.orphan) || f.s.HasBlob(f.blobs[2]) || !f.s.HasBlob(f.blobs[1]) {
		t.Error("wrong blobs removed")
	}
	after, _ := f.s.DiskUsage(ctx)
	wantReclaimed := u.Total() - after.Total() // layers count by recorded size
	if rep.Removed != 4 || rep.Reclaimed != wantReclaimed {
		t.Errorf("report = %+v, want 4 removed and %d reclaimed", rep, wantReclaimed)
	}
	if _, err := f.s.Lookup(ctx, f.keys[3]); err != nil {
		t.Errorf("kept record lookup: %v", err)
	}
}

func TestPruneLookupRefreshesLRU(t *testing.T) {
	f := newPruneFixture(t)
	ctx := t.Context()
	if _, err := f.s.Lookup(ctx, f.keys[2]); err != nil { // r2 becomes the newest
		t.Fatal(err)
	}
	u, _ := f.s.DiskUsage(ctx)
	if _, err := f.s.Prune(ctx, PruneOptions{KeepStorage: u.Total() - 3000, RemoveLayer: f.layers.remove}); err != nil {
		t.Fatal(err)
	}
	// Now r3 is the least recently used unprotected record.
	if diff := cmp.Diff([]bool{true, true, true, false}, f.present(t)); diff != "" {
		t.Errorf("records present (-want +got):\n%s", diff)
	}
}

func TestPruneUntilAndInUse(t *testing.T) {
	f := newPruneFixture(t)
	ctx := t.Context()
	inUse := func(d string) bool { return d == f.diffIDs[2] }
	rep, err := f.s.Prune(ctx, PruneOptions{Until: 8*time.Hour + 30*time.Minute, InUse: inUse, RemoveLayer: f.layers.remove})
	if err != nil {
		t.Fatal(err)
	}
	// r2 (9h) is in use, r3 (8h) and r1 (7h) are too recent; the orphan is old.
	if diff := cmp.Diff([]bool{true, true, true, true}, f.present(t)); diff != "" {
		t.Errorf("records present (-want +got):\n%s", diff)
	}
	if rep.Removed != 1 || f.s.HasBlob(f.orphan) {
		t.Errorf("report %+v; orphan present=%v", rep, f.s.HasBlob(f.orphan))
	}
}

func TestPruneAllKeepsTaggedImages(t *testing.T) {
	f := newPruneFixture(t)
	ctx := t.Context()
	for _, b := range []*BuildRecord{
		{ID: "tagged", Project: "p", Finished: time.Now(), ImageDigest: f.image[0]},
		{ID: "untagged", Project: "p", Finished: time.Now(), ImageDigest: "sha256:gone"},
	} {
		if err := f.s.PutBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	writeAged(t, dir, map[string]string{"x": "x"})
	if _, err := f.s.HashFile(ctx, dir+"/x", nil); err != nil {
		t.Fatal(err)
	}
	if err := f.s.FlushHashes(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.Prune(ctx, PruneOptions{All: true, RemoveLayer: f.layers.remove}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]bool{true, false, false, false}, f.present(t)); diff != "" {
		t.Errorf("records present (-want +got):\n%s", diff)
	}
	for _, b := range append([]string{f.blobs[0]}, f.image...) {
		if _, err := f.s.ReadBlob(ctx, b); err != nil {
			t.Errorf("image blob %s: %v", b, err)
		}
	}
	if d, err := f.s.ResolveTag(ctx, "app:v1"); err != nil || d != f.image[0] {
		t.Errorf("tag after prune: %s, %v", d, err)
	}
	if _, err := f.s.GetBuild(ctx, "tagged"); err != nil {
		t.Errorf("build of tagged image: %v", err)
	}
	if _, err := f.s.GetBuild(ctx, "untagged"); !errors.Is(err, ErrNotFound) {
		t.Errorf("build of untagged image: %v, want ErrNotFound", err)
	}
	u, _ := f.s.DiskUsage(ctx)
	if u.Hashes != 0 || u.BlobCount != 3 || u.KeyCount != 1 {
		t.Errorf("usage after prune --all = %+v", u)
	}
	if len(f.layers.removed) != 3 {
		t.Errorf("layers removed = %v", f.layers.removed)
	}
}

func TestPruneWaitsForBuilds(t *testing.T) {
	s := openStore(t)
	unlock, err := s.RLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Prune(ctx, PruneOptions{All: true}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Prune during a build: %v, want deadline exceeded", err)
	}
}

// TestPruneSweep: prune hands its Sweep a needed() that keeps what the
// tagged image and the remaining records name, after removing the rest.
func TestPruneSweep(t *testing.T) {
	f := newPruneFixture(t)
	var needed func(string) bool
	_, err := f.s.Prune(t.Context(), PruneOptions{All: true, RemoveLayer: f.layers.remove,
		Sweep: func(_ context.Context, n func(string) bool) (int64, error) { needed = n; return 7, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if needed == nil {
		t.Fatal("Sweep was not called")
	}
	for _, d := range append([]string{f.blobs[0]}, f.image...) {
		if !needed(d) {
			t.Errorf("needed(%s) = false for a blob of the tagged image", d)
		}
	}
	for _, d := range []string{f.orphan, f.blobs[1], digestOf([]byte("never stored"))} {
		if needed(d) {
			t.Errorf("needed(%s) = true for a blob prune removed or never had", d)
		}
	}
}
