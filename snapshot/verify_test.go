package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/builder-dev/builder/snapshot"
)

// TestLayerStoreVerify: Verify finds a damaged layer.json, a committed
// layer changed on disk, and an unpacked layer that no longer equals its
// tar, and changes nothing; a good layer passes.
func TestLayerStoreVerify(t *testing.T) {
	e, data := committedTar(t)
	ctx := context.Background()
	if checked, err := e.Layers.Verify(ctx, e.Base, nil); err != nil || !checked {
		t.Fatalf("Verify of a good committed layer = %v, %v", checked, err)
	}

	s, err := snapshot.OpenLayerStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	id := digestOf(data)
	if _, err := s.Unpack(ctx, id, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if checked, err := s.Verify(ctx, id, nil); err != nil || checked {
		t.Errorf("Verify of an unpacked layer without its tar = %v, %v; want unchecked", checked, err)
	}
	if checked, err := s.Verify(ctx, id, bytes.NewReader(data)); err != nil || !checked {
		t.Fatalf("Verify of a good unpacked layer = %v, %v", checked, err)
	}
	// Directory times are not compared: a directory the tar does not list
	// gets the time of each unpack.
	old := time.Unix(1000000000, 0)
	if err := os.Chtimes(filepath.Join(s.Dir(id), "etc"), old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, id, bytes.NewReader(data)); err != nil {
		t.Errorf("Verify after a directory time changed: %v", err)
	}
	if _, err := s.Verify(ctx, id, bytes.NewReader(append(bytes.Clone(data), 0))); !errors.Is(err, snapshot.ErrBadSource) {
		t.Errorf("Verify against a wrong tar: %v, want ErrBadSource", err)
	}

	passwd := filepath.Join(s.Dir(id), "etc", "passwd")
	orig, err := os.ReadFile(passwd)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(orig)
	bad[len(bad)/2] ^= 0xff
	if err := os.WriteFile(passwd, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	var me *snapshot.ModifiedError
	if _, err := s.Verify(ctx, id, bytes.NewReader(data)); !errors.As(err, &me) || me.DiffID != id {
		t.Errorf("Verify of a modified unpacked layer: %v, want a ModifiedError", err)
	}
	if got, _ := os.ReadFile(passwd); !bytes.Equal(got, bad) {
		t.Errorf("Verify changed the layer")
	}

	meta := filepath.Join(filepath.Dir(s.Dir(id)), "layer.json")
	if err := os.WriteFile(meta, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, id, bytes.NewReader(data)); !errors.Is(err, snapshot.ErrBadMetadata) {
		t.Errorf("Verify with a damaged layer.json: %v, want ErrBadMetadata", err)
	}
	if s.Has(id) {
		t.Errorf("Has is true for a layer with a damaged layer.json")
	}
	dirs, stray, err := s.Entries()
	if err != nil || len(dirs) != 1 || dirs[0] != id || len(stray) != 0 {
		t.Errorf("Entries = %v, %v, %v", dirs, stray, err)
	}
	// Unpacking again replaces the damaged directory.
	if _, err := s.Unpack(ctx, id, bytes.NewReader(data)); err != nil {
		t.Fatalf("Unpack over a damaged layer: %v", err)
	}
	if got, _ := os.ReadFile(passwd); !bytes.Equal(got, orig) {
		t.Errorf("Unpack kept the damaged content")
	}
	if checked, err := s.Verify(ctx, id, bytes.NewReader(data)); err != nil || !checked {
		t.Errorf("Verify after the new Unpack = %v, %v", checked, err)
	}
	assertOnlyLayers(t, s.Root(), 1)
}
