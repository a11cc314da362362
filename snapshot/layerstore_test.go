package snapshot_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/builder-dev/builder/snapshot"
	"github.com/builder-dev/builder/snapshot/snapshottest"
)

func digestOf(data []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(data)) }

// committedTar commits a small layer with the copy snapshotter and returns
// its tar.
func committedTar(t *testing.T) (*snapshottest.Env, []byte) {
	e := snapshottest.NewEnv(t, newCopy)
	return e, e.Tar(e.Base)
}

func TestLayerStoreUnpack(t *testing.T) {
	_, data := committedTar(t)
	id := digestOf(data)
	s, err := snapshot.OpenLayerStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	layer, err := s.Unpack(ctx, id, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if layer.DiffID != id || layer.Size != int64(len(data)) || !s.Has(id) {
		t.Fatalf("Unpack = %+v, Has = %v", layer, s.Has(id))
	}
	if got, err := s.Size(id); err != nil || got != int64(len(data)) {
		t.Errorf("Size = %d, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(id), "etc/passwd")); err != nil {
		t.Errorf("unpacked layer dir: %v", err)
	}
	if _, err := s.WriteTar(ctx, id, &bytes.Buffer{}); !errors.Is(err, snapshot.ErrNotReproducible) {
		t.Errorf("WriteTar of unpacked layer: %v, want ErrNotReproducible", err)
	}
	if _, err := s.Unpack(ctx, id, strings.NewReader("ignored: already present")); err != nil {
		t.Errorf("second Unpack: %v", err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0] != id {
		t.Errorf("List = %v, %v", list, err)
	}
	if du, err := s.DiskUsage(ctx); err != nil || du <= 0 {
		t.Errorf("DiskUsage = %d, %v", du, err)
	}
	if err := s.Remove(ctx, id); err != nil || s.Has(id) {
		t.Fatalf("Remove: %v, Has = %v", err, s.Has(id))
	}
	if err := s.Remove(ctx, id); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Remove missing: %v, want ErrNotFound", err)
	}
	assertOnlyLayers(t, s.Root(), 0)
}

func TestLayerStoreUnpackDigestMismatch(t *testing.T) {
	_, data := committedTar(t)
	s, err := snapshot.OpenLayerStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	wrong := "sha256:" + strings.Repeat("ab", 32)
	_, err = s.Unpack(context.Background(), wrong, bytes.NewReader(data))
	if err == nil || !strings.Contains(err.Error(), "content has digest") {
		t.Fatalf("Unpack with wrong digest: %v", err)
	}
	if s.Has(wrong) {
		t.Error("layer stored despite digest mismatch")
	}
	assertOnlyLayers(t, s.Root(), 0)
	if _, err := s.Unpack(context.Background(), "sha256:XYZ", bytes.NewReader(data)); err == nil {
		t.Error("Unpack accepted an invalid diffID")
	}
}

// TestLayerStoreConcurrentUnpack: two stores on one root (as two processes
// would be) unpack the same layer at once; both succeed.
func TestLayerStoreConcurrentUnpack(t *testing.T) {
	_, data := committedTar(t)
	id := digestOf(data)
	root := filepath.Join(t.TempDir(), "store")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			s, err := snapshot.OpenLayerStore(root)
			if err == nil {
				_, err = s.Unpack(context.Background(), id, bytes.NewReader(data))
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("unpack %d: %v", i, err)
		}
	}
	assertOnlyLayers(t, root, 1)
}

// TestLayerStoreWriteTarDetectsTampering: a committed layer whose directory
// changed no longer serializes to its diffID, and WriteTar says so.
func TestLayerStoreWriteTarDetectsTampering(t *testing.T) {
	e, data := committedTar(t)
	if got := digestOf(data); got != e.Base {
		t.Fatalf("WriteTar digest %s, diffID %s", got, e.Base)
	}
	if err := os.WriteFile(filepath.Join(e.Layers.Dir(e.Base), "keep"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := e.Layers.WriteTar(context.Background(), e.Base, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "modified on disk") {
		t.Fatalf("WriteTar of tampered layer: %v", err)
	}
	var me *snapshot.ModifiedError
	if !errors.Is(err, snapshot.ErrModified) || !errors.As(err, &me) || me.DiffID != e.Base {
		t.Errorf("WriteTar error %v does not match ErrModified with diffID %s", err, e.Base)
	}
}

func TestLayerStoreDirsArePrivate(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	if _, err := snapshot.OpenLayerStore(root); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(root)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("store root mode %v, %v; want 0700", fi.Mode(), err)
	}
	if _, err := snapshot.OpenLayerStore(t.TempDir() + "/a:b"); err == nil {
		t.Error("OpenLayerStore accepted a path with ':'")
	}
}

// assertOnlyLayers checks root holds exactly n entries (no temp dirs left).
func assertOnlyLayers(t *testing.T, root string, n int) {
	t.Helper()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("store holds %v, want %d layer dirs", names, n)
	}
}

// TestLayerStoreScratch: with WithScratch, work in progress lives in the
// scratch directory, never in the store's root (where a killed process
// would leave it), and still lands whole in the store.
func TestLayerStoreScratch(t *testing.T) {
	_, data := committedTar(t)
	id := digestOf(data)
	dir := t.TempDir()
	scratch := filepath.Join(dir, "scratch")
	if err := os.Mkdir(scratch, 0o700); err != nil {
		t.Fatal(err)
	}
	var calls int
	s, err := snapshot.OpenLayerStore(filepath.Join(dir, "store"), snapshot.WithScratch(func() (string, error) {
		calls++
		return scratch, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Unpack(ctx, digestOf([]byte("other")), bytes.NewReader(data)); err == nil {
		t.Fatal("Unpack with a wrong digest succeeded")
	}
	if _, err := s.Unpack(ctx, id, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if calls != 3 {
		t.Errorf("scratch asked %d times, want 3 (two unpacks, one remove)", calls)
	}
	if _, err := s.Unpack(ctx, id, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	assertOnlyLayers(t, s.Root(), 1)
	if ents, _ := os.ReadDir(scratch); len(ents) != 0 {
		t.Errorf("scratch not emptied: %v", ents)
	}
}
