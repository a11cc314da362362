package exporter

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/builder-dev/builder/cache"
)

// loadedStore is a store holding twoImages loaded from a docker archive:
// blobs plus unpacked layers, as pulled images are.
func loadedStore(t *testing.T) (*Store, string) {
	t.Helper()
	in := filepath.Join(t.TempDir(), "in.tar")
	if err := WriteDocker(t.Context(), in, twoImages(t)); err != nil {
		t.Fatal(err)
	}
	st := newTestStore(t)
	if _, err := st.Load(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	return st, in
}

func storeBlobFile(st *Store, d v1.Hash) string {
	return filepath.Join(st.c.Root(), "blobs", "sha256", d.Hex)
}

func flip(t *testing.T, p string) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func problems(r *FsckReport) string {
	var b strings.Builder
	for _, p := range r.Problems {
		b.WriteString(p.String() + "\n")
	}
	return b.String()
}

func TestFsckCleanStore(t *testing.T) {
	st, _ := loadedStore(t)
	r, err := st.Fsck(t.Context(), false)
	if err != nil || len(r.Problems) != 0 {
		t.Fatalf("Fsck of a fresh store = %v, %v:\n%s", r, err, problems(r))
	}
	if r.Checked["images"] != 2 || r.Checked["layers"] != 3 || r.Checked["blobs"] < 7 {
		t.Errorf("Checked = %v", r.Checked)
	}
}

// TestDamagedConfig: a damaged config is a DamagedError naming the image,
// the blob and what to do, not "no such image"; images lists the others;
// storing the image again repairs it.
func TestDamagedConfig(t *testing.T) {
	st, _ := loadedStore(t)
	ctx := t.Context()
	img, err := st.Image(ctx, "app:v1")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigName()
	flip(t, storeBlobFile(st, cfg))
	_, err = st.Image(ctx, "app:v1")
	var de *DamagedError
	if !errors.As(err, &de) || de.Part != "config" || de.Digest != cfg.String() {
		t.Fatalf("Image with a damaged config: %v, want a DamagedError for config %s", err, cfg)
	}
	if errors.Is(err, cache.ErrNotFound) || !errors.Is(err, cache.ErrCorrupt) {
		t.Errorf("DamagedError: Is(ErrNotFound) %v, Is(ErrCorrupt) %v; want false, true", errors.Is(err, cache.ErrNotFound), errors.Is(err, cache.ErrCorrupt))
	}
	for _, want := range []string{"image app:v1", cfg.String(), "builder pull app:v1", "builder load", "builder rmi app:v1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	list, err := st.List(ctx)
	if !errors.As(err, &de) || len(list) != 2 || list[0].Damaged != "" || list[1].Damaged == "" {
		t.Errorf("List = %+v, %v; want the good image first and the damaged one marked", list, err)
	}
	if _, err := st.Put(ctx, img, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Image(ctx, "app:v1"); err != nil {
		t.Errorf("Put did not repair the config: %v", err)
	}
}

// TestFsckLayerBlob: a damaged layer blob is reported with the images
// that need it and what to do, and left alone without repair; with
// repair it is removed and the images that now lack it remain problems
// until the image is loaded again.
func TestFsckLayerBlob(t *testing.T) {
	st, in := loadedStore(t)
	ctx := t.Context()
	img, err := st.Image(ctx, "app:v1")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	shared := m.Layers[0].Digest
	flip(t, storeBlobFile(st, shared))
	r, err := st.Fsck(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	text := problems(r)
	if len(r.Problems) != 1 || !strings.Contains(text, shared.Hex) || !strings.Contains(text, "image app:latest, app:v1 (layer 0 (COPY files /))") ||
		!strings.Contains(text, "localhost:5000/team/app:v2") || !strings.Contains(text, "builder load") {
		t.Errorf("Fsck:\n%s", text)
	}
	if _, err := os.Stat(storeBlobFile(st, shared)); err != nil {
		t.Errorf("Fsck without repair removed the blob: %v", err)
	}
	r, err = st.Fsck(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if r.Remaining() != 2 {
		t.Errorf("after repair %d problems remain, want 2 (both images lack the layer):\n%s", r.Remaining(), problems(r))
	}
	if _, err := st.Image(ctx, "app:v1"); err == nil || !strings.Contains(err.Error(), "layer 0") {
		t.Errorf("Image without its layer: %v", err)
	}
	if _, err := st.Load(ctx, in); err != nil {
		t.Fatal(err)
	}
	if r, _ := st.Fsck(ctx, false); len(r.Problems) != 0 {
		t.Errorf("Fsck after the load:\n%s", problems(r))
	}
}

// TestFsckUnpackedLayer: an unpacked layer changed on disk is found by
// comparing it with its blob; repair removes it, and the image still
// reads from its blob.
func TestFsckUnpackedLayer(t *testing.T) {
	st, _ := loadedStore(t)
	ctx := t.Context()
	img, _ := st.Image(ctx, "app:v1")
	cfg, _ := img.ConfigFile()
	diffID := cfg.RootFS.DiffIDs[1].String()
	if err := os.WriteFile(filepath.Join(st.ls.Dir(diffID), "app"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := st.Fsck(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 1 || !strings.HasSuffix(r.Problems[0].Path, filepath.Join(cfg.RootFS.DiffIDs[1].Hex, "fs")) ||
		!strings.Contains(r.Problems[0].What, "differs from the layer blob") {
		t.Fatalf("Fsck:\n%s", problems(r))
	}
	r, _ = st.Fsck(ctx, true)
	if r.Remaining() != 0 || st.layers.Has(diffID) {
		t.Errorf("repair: %d remaining, layer kept %v:\n%s", r.Remaining(), st.layers.Has(diffID), problems(r))
	}
	img, err = st.Image(ctx, "app:v1")
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, img)
}

// TestFsckCompressedRecord: a compressed record whose blob is gone is
// reported and removed; the next Compressed makes the blob again.
func TestFsckCompressedRecord(t *testing.T) {
	st, _ := loadedStore(t)
	ctx := t.Context()
	ls := newFakeLayers()
	diffID, size := ls.put(layerTar(t, map[string]string{"f": "x"}))
	l, err := LayerFromStore(ctx, ls, diffID, size)
	if err != nil {
		t.Fatal(err)
	}
	gz, err := st.Compressed(ctx, l, Compression{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := gz.Digest()
	if err := os.Remove(storeBlobFile(st, d)); err != nil {
		t.Fatal(err)
	}
	r, _ := st.Fsck(ctx, true)
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].What, "is gone") || r.Remaining() != 0 {
		t.Fatalf("Fsck:\n%s", problems(r))
	}
	if _, err := st.Compressed(ctx, l, Compression{}, nil); err != nil || !st.blobs.HasBlob(d.String()) {
		t.Errorf("Compressed after the repair: %v, blob there %v", err, st.blobs.HasBlob(d.String()))
	}
}

// TestFsckIndex: a tag naming an image index (as a pull from a registry
// keeps it: only the platforms pulled are here) is checked through the
// images it holds; a missing platform is no problem, a damaged image of
// the index is, named by the index's tag.
func TestFsckIndex(t *testing.T) {
	ctx := t.Context()
	st, _ := loadedStore(t)
	img, err := st.Image(ctx, "app:v1")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	m, _ := img.Manifest()
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json", Manifests: []v1.Descriptor{
		{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: d, Size: 1, Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}},
		{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: shaOf("not pulled"), Size: 1, Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}},
	}}
	raw, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.putIndexOf(ctx, raw, shaOf(string(raw)), []string{"multi:1"}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Fsck(ctx, false)
	if err != nil || len(r.Problems) != 0 {
		t.Fatalf("Fsck with a pulled index = %v:\n%s", err, problems(r))
	}
	flip(t, storeBlobFile(st, m.Config.Digest))
	r, err = st.Fsck(ctx, false)
	if err != nil || !strings.Contains(problems(r), "multi:1") {
		t.Errorf("Fsck of an index whose image's config is damaged = %v:\n%s", err, problems(r))
	}
}
