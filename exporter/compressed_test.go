package exporter

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/cache"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
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

// TestWriteOCIReusesRecordedBlob: a built layer that the store holds
// compressed with the archive's setting (a push or a cache export recorded
// the blob) goes into an OCI archive as that blob, without serializing the
// layer again; an archive written without the store compresses it.
func TestWriteOCIReusesRecordedBlob(t *testing.T) {
	for _, c := range []Compression{{}, {Codec: Zstd}} {
		t.Run(c.String(), func(t *testing.T) {
			r := newRecordedImage(t, c)
			kept := filepath.Join(t.TempDir(), "kept.tar")
			if err := r.st.WriteOCI(t.Context(), kept, r.tagged, c, false); err != nil {
				t.Fatal(err)
			}
			if got := ociLayerDigest(t, kept); got != r.recorded {
				t.Errorf("archive's layer is %s, want the recorded blob %s", got, r.recorded)
			}
			if r.tars.count() != 0 {
				t.Errorf("layer serialized %d times for an archive of its recorded blob", r.tars.count())
			}
			fresh := filepath.Join(t.TempDir(), "fresh.tar")
			if err := WriteOCI(t.Context(), fresh, r.tagged, c); err != nil {
				t.Fatal(err)
			}
			if got := ociLayerDigest(t, fresh); got == r.recorded {
				t.Errorf("archive written without the store has the recorded blob %s", got)
			}
			if r.tars.count() != 1 {
				t.Errorf("layer serialized %d times for an archive that compresses it, want 1", r.tars.count())
			}
		})
	}
}

// TestWriteOCIRecordedBlobDamaged: a recorded blob damaged on disk
// (cut short, or a byte changed) is found so as it is copied: it is
// removed, cut off the archive again, and the layer compressed instead.
// The archive is then exactly the one written without the store.
func TestWriteOCIRecordedBlobDamaged(t *testing.T) {
	for _, damage := range []string{"truncate", "flip"} {
		t.Run(damage, func(t *testing.T) {
			r := newRecordedImage(t, Compression{})
			blob := blobFile(r.st, r.recorded)
			switch damage {
			case "truncate":
				if err := os.Truncate(blob, 100); err != nil {
					t.Fatal(err)
				}
			case "flip":
				data := mustRead(t, blob)
				data[len(data)/2] ^= 0xff
				if err := os.WriteFile(blob, data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			dir := t.TempDir()
			out, plain := filepath.Join(dir, "out.tar"), filepath.Join(dir, "plain.tar")
			if err := r.st.WriteOCI(t.Context(), out, r.tagged, Compression{}, false); err != nil {
				t.Fatalf("export with a damaged recorded blob: %v", err)
			}
			if err := WriteOCI(t.Context(), plain, r.tagged, Compression{}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(mustRead(t, out), mustRead(t, plain)) {
				t.Error("archive differs from the one written without the store")
			}
			if _, err := os.Stat(blob); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("damaged blob still in the store (stat: %v)", err)
			}
		})
	}
}

// TestWriteOCIKeeps: an OCI archive written for a build that keeps its
// blobs anyway (a push or cache export with the same setting follows)
// compresses each layer once, into the store: the layer is recorded, and
// the push after it finds it without reading the layer again. Whether a
// layer was compressed into the archive, taken from a record or kept,
// the archive's bytes are the same.
func TestWriteOCIKeeps(t *testing.T) {
	for _, c := range []Compression{{}, {Codec: Zstd}} {
		t.Run(c.String(), func(t *testing.T) {
			ctx := t.Context()
			tars := &countingTars{fakeLayers: newFakeLayers()}
			var layers []v1.Layer
			var diffIDs []v1.Hash
			for _, word := range []string{"first ", "second "} {
				diffID, size := tars.put(layerTar(t, map[string]string{word: strings.Repeat(word, 80000)}))
				l, err := LayerFromStore(ctx, tars, diffID, size)
				if err != nil {
					t.Fatal(err)
				}
				h, _ := l.DiffID()
				layers, diffIDs = append(layers, l), append(diffIDs, h)
			}
			img, err := NewImage(&v1.ConfigFile{Architecture: "amd64", OS: "linux",
				RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs}}, layers)
			if err != nil {
				t.Fatal(err)
			}
			tagged := []Tagged{{Image: img}}
			st := newTestStore(t)
			write := func(name string, keep bool) []byte {
				t.Helper()
				p := filepath.Join(t.TempDir(), name)
				if err := st.WriteOCI(ctx, p, tagged, c, keep); err != nil {
					t.Fatal(err)
				}
				return mustRead(t, p)
			}
			plain := write("plain.tar", false)
			if _, ok := st.compressedRecord(diffIDs[0], c); ok {
				t.Fatal("an archive written without keep recorded its blob")
			}
			// The second layer pushed: recorded; the first is not.
			if _, err := st.Compressed(ctx, layers[1], c, nil); err != nil {
				t.Fatal(err)
			}
			if half := write("half.tar", false); !bytes.Equal(half, plain) {
				t.Error("archive with one layer from its record differs from the one compressing both")
			}
			serialized := tars.count()
			kept := write("kept.tar", true)
			if !bytes.Equal(kept, plain) {
				t.Error("archive written with keep differs from the one compressing both")
			}
			rec, ok := st.compressedRecord(diffIDs[0], c)
			if !ok {
				t.Fatal("an archive written with keep recorded no blob")
			}
			if tars.count() != serialized+1 {
				t.Errorf("archive with keep serialized %d layers, want 1 (the other is recorded)", tars.count()-serialized)
			}
			pushed, err := st.Compressed(ctx, layers[0], c, nil)
			if err != nil {
				t.Fatal(err)
			}
			if d, _ := pushed.Digest(); d != rec.Digest || tars.count() != serialized+1 {
				t.Errorf("push after the archive: blob %s (recorded %s), layer serialized again: %v", d, rec.Digest, tars.count() != serialized+1)
			}
		})
	}
}

// recordedImage is an image of one built layer whose blob compressed with
// c is recorded in st, compressed otherwise than this builder would (so
// its digest tells where an archive's layer came from).
type recordedImage struct {
	st       *Store
	tars     *countingTars
	tagged   []Tagged
	recorded v1.Hash
}

func newRecordedImage(t *testing.T, c Compression) recordedImage {
	t.Helper()
	ctx := t.Context()
	tars := &countingTars{fakeLayers: newFakeLayers()}
	data := layerTar(t, map[string]string{"a": strings.Repeat("recorded ", 50000)})
	diffID, size := tars.put(data)
	l, err := LayerFromStore(ctx, tars, diffID, size)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := l.DiffID()
	img, err := NewImage(&v1.ConfigFile{Architecture: "amd64", OS: "linux",
		RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{h}}}, []v1.Layer{l})
	if err != nil {
		t.Fatal(err)
	}
	var blob bytes.Buffer
	if c.codec() == Zstd {
		zw, err := zstd.NewWriter(&blob, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(data)
		zw.Close()
	} else {
		zw, _ := gzip.NewWriterLevel(&blob, gzip.BestSpeed)
		zw.Name = "recorded"
		zw.Write(data)
		zw.Close()
	}
	st := newTestStore(t)
	digest, n, err := st.blobs.WriteBlob(ctx, &blob, "")
	if err != nil {
		t.Fatal(err)
	}
	recorded, _ := v1.NewHash(digest)
	if err := st.writeCompressedRecord(ctx, newCompressedRecord(h, recorded, n, c)); err != nil {
		t.Fatal(err)
	}
	return recordedImage{st: st, tars: tars, tagged: []Tagged{{Image: img, Tags: []string{"app:v1"}}}, recorded: recorded}
}

// ociLayerDigest is the digest of the only layer of the only image of the
// OCI archive at path, whose blob the archive must hold.
func ociLayerDigest(t *testing.T, path string) v1.Hash {
	t.Helper()
	idx, err := OCIIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := readTarMember(path, "blobs/sha256/"+idx.Manifests[0].Digest.Hex)
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 1 {
		t.Fatalf("manifest has %d layers, want 1", len(m.Layers))
	}
	d := m.Layers[0].Digest
	if _, err := readTarMember(path, "blobs/sha256/"+d.Hex); err != nil {
		t.Fatalf("layer blob %s: %v", d, err)
	}
	return d
}
