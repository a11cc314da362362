package exporter

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/builder-dev/builder/cache"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestCompressedOnceAndReused(t *testing.T) {
	tars := &countingTars{fakeLayers: newFakeLayers()}
	data := layerTar(t, map[string]string{"big": strings.Repeat("0123456789", 300000)})
	diffID, size := tars.put(data)
	l, err := LayerFromStore(t.Context(), tars, diffID, size)
	if err != nil {
		t.Fatal(err)
	}
	st := newTestStore(t)
	gz, err := st.Compressed(t.Context(), l, Compression{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mt, _ := gz.MediaType(); mt != types.OCILayer {
		t.Errorf("media type %s, want %s", mt, types.OCILayer)
	}
	if d, _ := gz.DiffID(); d.String() != diffID {
		t.Errorf("diffID %s, want %s", d, diffID)
	}
	digest, _ := gz.Digest()
	if !st.blobs.HasBlob(digest.String()) {
		t.Fatalf("compressed blob %s not stored", digest)
	}
	// The blob is a gzip of the tar, with no name or time in its header.
	rc, err := gz.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(rc)
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header name %q mtime %v, want none", zr.Name, zr.ModTime)
	}
	plain, err := io.ReadAll(zr)
	rc.Close()
	if err != nil || !bytes.Equal(plain, data) {
		t.Fatalf("gunzip of the blob differs from the layer tar (err %v)", err)
	}

	var rec compressedRecord
	h, _ := v1.NewHash(diffID)
	if err := json.Unmarshal(mustRead(t, st.compressedPath(h, Compression{})), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Digest != digest || rec.DiffID.String() != diffID {
		t.Errorf("record %+v, want digest %s", rec, digest)
	}

	again, err := st.Compressed(t.Context(), l, Compression{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := again.Digest(); d != digest {
		t.Errorf("second call gave %s, first %s", d, digest)
	}
	if tars.count() != 1 {
		t.Errorf("layer serialised %d times, want 1", tars.count())
	}

	// Another store compresses the same tar to the same bytes.
	other, err := newTestStore(t).Compressed(t.Context(), l, Compression{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := other.Digest(); d != digest {
		t.Errorf("compression is not deterministic: %s vs %s", d, digest)
	}

	// A record whose blob is gone is a miss: compress again.
	if err := os.Remove(blobFile(st, digest)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Compressed(t.Context(), l, Compression{}, nil); err != nil {
		t.Fatal(err)
	}
	if tars.count() != 3 {
		t.Errorf("layer serialised %d times, want 3", tars.count())
	}
}

func TestCompressedRejectsWrongContent(t *testing.T) {
	tars := &countingTars{fakeLayers: newFakeLayers()}
	data := layerTar(t, map[string]string{"a": "1"})
	diffID, size := tars.put(data)
	// The layer store now serves other bytes of the same length under that
	// diffID (a snapshot changed behind our back).
	bad := bytes.Clone(data)
	bad[len(bad)/3] ^= 0xff
	tars.tars[diffID] = bad
	l, err := LayerFromStore(t.Context(), tars, diffID, size)
	if err != nil {
		t.Fatal(err)
	}
	st := newTestStore(t)
	if _, err := st.Compressed(t.Context(), l, Compression{}, nil); err == nil || !strings.Contains(err.Error(), diffID) {
		t.Fatalf("compress of a layer whose content changed: %v", err)
	}
	h, _ := v1.NewHash(diffID)
	if _, err := os.Stat(st.compressedPath(h, Compression{})); !os.IsNotExist(err) {
		t.Errorf("a record was written for a bad layer: %v", err)
	}
}

func TestCompressedKeepsCompressedLayers(t *testing.T) {
	img := platformImage(t, "amd64")
	layers, _ := img.Layers()
	got, err := newTestStore(t).Compressed(context.Background(), layers[0], Compression{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != layers[0] {
		t.Error("a gzip layer was not returned as it is")
	}
}

// blobFile is the path of a blob in the test store.
func blobFile(st *Store, d v1.Hash) string {
	return strings.TrimSuffix(st.compressedDir, string(cache.Compressed)) + "blobs/sha256/" + d.Hex
}
