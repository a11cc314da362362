package exporter

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/snapshot"
)

// TestDropModifiedLayer: after an export found a layer changed on disk,
// the build's steps that made it lose their records and the layer is gone;
// other steps and other errors are left alone.
func TestDropModifiedLayer(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	c, err := cache.Open(filepath.Join(dir, "root"))
	if err != nil {
		t.Fatal(err)
	}
	ls, err := snapshot.OpenLayerStore(filepath.Join(dir, "layers"))
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(c, ls)
	// The caller's own uid and gid: unpacking needs no root.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "f", Mode: 0o644, Size: 1, Uid: os.Getuid(), Gid: os.Getgid(), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	tarData := buf.Bytes()
	sum := sha256.Sum256(tarData)
	diffID := "sha256:" + hex.EncodeToString(sum[:])
	if _, err := ls.Unpack(ctx, diffID, bytes.NewReader(tarData)); err != nil {
		t.Fatal(err)
	}
	var steps []cache.StepRecord
	for i, layer := range []string{diffID, "sha256:" + hex.EncodeToString(make([]byte, 32)), diffID} {
		k := cache.KeyOf(cache.Key{}, cache.Inputs{Op: "RUN", Fields: []cache.Field{{Name: "n", Value: fmt.Sprint(i)}}})
		if err := c.Put(ctx, &cache.Record{Key: k, DiffID: layer}); err != nil {
			t.Fatal(err)
		}
		steps = append(steps, cache.StepRecord{Line: i + 2, Key: k, Layer: layer})
	}

	other := errors.New("disk full")
	if dropped, err := s.DropModifiedLayer(ctx, steps, other); err != other || len(dropped) != 0 {
		t.Fatalf("another error: dropped %v, err %v", dropped, err)
	}
	modified := fmt.Errorf("export: %w", &snapshot.ModifiedError{DiffID: diffID})
	dropped, err := s.DropModifiedLayer(ctx, steps, modified)
	if !errors.Is(err, snapshot.ErrModified) {
		t.Fatalf("error %v does not wrap the modified layer's", err)
	}
	if len(dropped) != 2 || dropped[0].Line != 2 || dropped[1].Line != 4 {
		t.Fatalf("dropped %+v, want the steps of lines 2 and 4", dropped)
	}
	for i, st := range steps {
		_, err := c.Lookup(ctx, st.Key)
		if gone := errors.Is(err, cache.ErrNotFound); gone != (st.Layer == diffID) {
			t.Errorf("step %d (layer %s): lookup after the repair: %v", i, st.Layer, err)
		}
	}
	if ls.Has(diffID) {
		t.Error("the modified layer is still in the layer store")
	}
}
