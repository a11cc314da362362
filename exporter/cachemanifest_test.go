package exporter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/snapshot"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	bkcache "github.com/moby/buildkit/cache/remotecache/v1/types"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// committedLayers is a layer store whose layers all serialize (counted);
// nothing is unpacked into it.
type committedLayers struct{ *countingTars }

func (committedLayers) Unpack(ctx context.Context, diffID string, r io.Reader) (snapshot.Layer, error) {
	return snapshot.Layer{}, errors.New("unexpected unpack")
}

// cacheSource is a store holding two built layers and the records of four
// steps: two share layer a, one has an empty layer.
func cacheSource(t *testing.T) (*Store, *countingTars, []*cache.Record, map[string][]byte) {
	t.Helper()
	blobs, err := cache.Open(filepath.Join(t.TempDir(), "cache"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blobs.Close() })
	tars := &countingTars{fakeLayers: newFakeLayers()}
	s := &Store{blobs: blobs, layers: committedLayers{tars}, compressedDir: blobs.AreaPath(cache.Compressed)}
	a := layerTar(t, map[string]string{"a": "1"})
	b := layerTar(t, map[string]string{"b/c": strings.Repeat("xyz", 100000)})
	da, sa := tars.put(a)
	db, sb := tars.put(b)
	created := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	key := func(op string) cache.Key { return cache.KeyOf(cache.Key{}, cache.Inputs{Op: op}) }
	recs := []*cache.Record{
		{Key: key("COPY"), DiffID: da, Size: sa, CreatedBy: "COPY a /a # buildkit", Comment: "buildkit.dockerfile.v0", Created: created,
			ContentKey: key("COPY content")},
		{Key: key("RUN"), DiffID: db, Size: sb, CreatedBy: "RUN make", Created: created.Add(time.Second), RunMS: 4200},
		{Key: key("WORKDIR"), DiffID: da, Size: sa, CreatedBy: "WORKDIR /a", Created: created},
		{Key: key("ADD"), EmptyLayer: true, CreatedBy: "ADD nothing", Created: created},
	}
	return s, tars, recs, map[string][]byte{da: a, db: b}
}

func TestExportImportCacheRegistry(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t)
	src, tars, recs, content := cacheSource(t)
	ref := reg.host + "/cache/app:main"

	digest, err := src.ExportCache(ctx, recs, CacheLocation{Ref: ref}, RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tars.count() != 2 {
		t.Errorf("export serialized %d layer tars, want 2 (one per distinct layer)", tars.count())
	}
	r, _ := name.ParseReference(ref)
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d != digest {
		t.Errorf("registry holds %s, export returned %s", d, digest)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != CacheConfigType || len(m.Layers) != 2 {
		t.Fatalf("manifest config %s with %d layers, want %s with 2", m.Config.MediaType, len(m.Layers), CacheConfigType)
	}
	for _, l := range m.Layers {
		if l.MediaType != types.OCILayer {
			t.Errorf("layer %s media type %s, want %s", l.Digest, l.MediaType, types.OCILayer)
		}
	}

	// A second export compresses and uploads nothing.
	uploads := reg.uploads.Load()
	if _, err := src.ExportCache(ctx, recs, CacheLocation{Ref: ref}, RemoteOptions{}); err != nil {
		t.Fatal(err)
	}
	if tars.count() != 2 || reg.uploads.Load() != uploads {
		t.Errorf("second export: %d tars serialized, %d blobs uploaded; want 2 and %d", tars.count(), reg.uploads.Load(), uploads)
	}

	dst := newTestStore(t)
	ic, err := dst.ImportCache(ctx, CacheLocation{Ref: ref}, RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkImported(t, dst, ic, recs, content)

	// The importing store exports what it imported, from its kept blobs
	// (its unpacked layers cannot be re-serialized), into an OCI layout;
	// a third store imports that.
	loc := CacheLocation{Dir: filepath.Join(t.TempDir(), "layout"), Tag: "v1"}
	var imported []*cache.Record
	for _, r := range recs {
		got, err := dst.blobs.(*cache.Store).Lookup(ctx, r.Key)
		if err != nil {
			t.Fatal(err)
		}
		imported = append(imported, got)
	}
	if _, err := dst.ExportCache(ctx, imported, loc, RemoteOptions{}); err != nil {
		t.Fatal(err)
	}
	third := newTestStore(t)
	ic3, err := third.ImportCache(ctx, loc, RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkImported(t, third, ic3, recs, content)
}

// checkImported fetches every record of ic into s and checks what s holds.
func checkImported(t *testing.T, s *Store, ic *ImportedCache, recs []*cache.Record, content map[string][]byte) {
	t.Helper()
	ctx := t.Context()
	if ic.Len() != len(recs) {
		t.Errorf("imported %d records, want %d", ic.Len(), len(recs))
	}
	if _, err := ic.Fetch(ctx, cache.KeyOf(cache.Key{}, cache.Inputs{Op: "other"})); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("fetch of an unknown key: %v, want ErrNotFound", err)
	}
	for _, want := range recs {
		got, err := ic.Fetch(ctx, want.Key)
		if err != nil {
			t.Fatal(err)
		}
		if got.DiffID != want.DiffID || got.Size != want.Size || got.EmptyLayer != want.EmptyLayer ||
			got.CreatedBy != want.CreatedBy || got.Comment != want.Comment || !got.Created.Equal(want.Created) || got.RunMS != want.RunMS ||
			got.ContentKey != want.ContentKey {
			t.Errorf("fetched %+v, want %+v", got, want)
		}
		if err := s.blobs.(*cache.Store).Put(ctx, got); err != nil {
			t.Errorf("put fetched record: %v", err)
		}
		if want.EmptyLayer {
			continue
		}
		var buf bytes.Buffer
		if _, err := s.WriteTar(ctx, want.DiffID, &buf); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), content[want.DiffID]) || !s.layers.Has(want.DiffID) {
			t.Errorf("layer %s: unpacked %v, tar of %d bytes differs from the original", want.DiffID, s.layers.Has(want.DiffID), buf.Len())
		}
	}
}

func TestImportCacheErrors(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t)
	s := newTestStore(t)
	for _, loc := range []CacheLocation{
		{Ref: reg.host + "/cache/none:latest"},
		{Dir: filepath.Join(t.TempDir(), "none")},
	} {
		if _, err := s.ImportCache(ctx, loc, RemoteOptions{}); !errors.Is(err, ErrImageNotFound) || !strings.Contains(err.Error(), loc.String()) {
			t.Errorf("import of missing %s: %v, want ErrImageNotFound naming it", loc, err)
		}
	}
	// An ordinary image is not a cache.
	tars := &countingTars{fakeLayers: newFakeLayers()}
	ref := reg.host + "/team/app:v1"
	if _, err := s.PushImage(ctx, builtImage(t, tars), ref, RemoteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportCache(ctx, CacheLocation{Ref: ref}, RemoteOptions{}); err == nil || !strings.Contains(err.Error(), "not a builder cache") {
		t.Errorf("import of an image: %v, want 'not a builder cache'", err)
	}
}

// The cache config is BuildKit's schema: BuildKit's own types decode it,
// every layer without a parent, every record's result naming its layer.
func TestCacheConfigIsBuildKits(t *testing.T) {
	ctx := t.Context()
	src, _, recs, _ := cacheSource(t)
	img, err := src.cacheImage(ctx, recs, Compression{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var cfg bkcache.CacheConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != bkcache.CacheConfigMediaTypeV0 || len(cfg.Layers) != len(m.Layers) || len(cfg.Records) != len(recs) {
		t.Fatalf("config %s with %d layers and %d records, manifest %d layers; want %s, %d records",
			m.Config.MediaType, len(cfg.Layers), len(cfg.Records), len(m.Layers), bkcache.CacheConfigMediaTypeV0, len(recs))
	}
	for i, l := range cfg.Layers {
		d := m.Layers[i]
		if l.Blob.String() != d.Digest.String() || l.ParentIndex != -1 || l.Annotations == nil ||
			l.Annotations.MediaType != string(d.MediaType) || l.Annotations.Size != d.Size || l.Annotations.DiffID == "" {
			t.Errorf("layer %d: %+v (annotations %+v), manifest has %+v", i, l, l.Annotations, d)
		}
	}
	for i, r := range cfg.Records {
		want := recs[i]
		if r.Digest.String() != want.Key.String() {
			t.Errorf("record %d digest %s, want %s", i, r.Digest, want.Key)
		}
		if want.EmptyLayer {
			if len(r.Results) != 0 {
				t.Errorf("record %d of an empty layer has results %+v", i, r.Results)
			}
			continue
		}
		if len(r.Results) != 1 || cfg.Layers[r.Results[0].LayerIndex].Annotations.DiffID.String() != want.DiffID ||
			!r.Results[0].CreatedAt.Equal(want.Created) {
			t.Errorf("record %d results %+v, want its layer %s created %s", i, r.Results, want.DiffID, want.Created)
		}
	}
}

// A cache BuildKit wrote (its config has no builder marker) is foreign.
func TestImportBuildKitCacheIsForeign(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t)
	s := newTestStore(t)
	l, err := random.Layer(512, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	diffID, err := l.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(bkcache.CacheConfig{
		Layers: []bkcache.CacheLayer{{Blob: digest.Digest(d.String()), ParentIndex: -1,
			Annotations: &bkcache.LayerAnnotations{MediaType: string(types.OCILayer), DiffID: digest.Digest(diffID.String())}}},
		Records: []bkcache.CacheRecord{{Digest: digest.FromString("bk"), Results: []bkcache.CacheResult{{LayerIndex: 0}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := imageFromParts(raw, CacheConfigType, []v1.Layer{l})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(reg.host + "/cache/bk:latest")
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	_, err = s.ImportCache(ctx, CacheLocation{Ref: r.String()}, RemoteOptions{})
	if !errors.Is(err, ErrForeignCache) || !strings.Contains(err.Error(), "BuildKit's cache") {
		t.Errorf("import of BuildKit's cache: %v, want ErrForeignCache naming BuildKit", err)
	}
}

// --cache-from an image index (a multi-platform build pushed with
// --cache-to type=inline) reads every platform's inline cache, not only
// one platform's: a platform's steps are keyed by its own TARGETARCH. The
// attestation manifest is left out.
func TestImportInlineCacheIndex(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t)
	s := newTestStore(t)
	var adds []mutate.IndexAddendum
	var keys []cache.Key
	for i, arch := range []string{"amd64", "arm"} {
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		ls, _ := img.Layers()
		diffID, _ := ls[0].DiffID()
		key := cache.KeyOf(cache.Key{}, cache.Inputs{Op: fmt.Sprintf("RUN-%d", i)})
		keys = append(keys, key)
		if img, err = InlineCache(img, []*cache.Record{{Key: key, DiffID: diffID.String()}}); err != nil {
			t.Fatal(err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	att, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	adds = append(adds, mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}}})
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	r, _ := name.ParseReference(reg.host + "/team/app:multi")
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	ic, err := s.ImportCache(ctx, CacheLocation{Ref: r.String()}, RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if _, ok := ic.records[k]; !ok {
			t.Errorf("platform %d's record %s not imported (records %d)", i, k, len(ic.records))
		}
	}
	if len(ic.records) != 2 || len(ic.layers) != 2 {
		t.Errorf("%d records, %d layers; want 2 of each", len(ic.records), len(ic.layers))
	}
}

// TestExportCacheLayoutModes: a cache exported into an OCI layout has
// the modes of BuildKit's local cache under the caller's umask — blobs
// read-only (the compressed layers too, which go-containerregistry
// writes 0600), index.json and oci-layout not executable — and a second
// export into it keeps them.
func TestExportCacheLayoutModes(t *testing.T) {
	for _, mask := range []int{0o022, 0o077} {
		t.Run(fmt.Sprintf("umask %03o", mask), func(t *testing.T) {
			src, _, recs, _ := cacheSource(t)
			old := unix.Umask(mask)
			defer unix.Umask(old)
			dir := filepath.Join(t.TempDir(), "layout")
			for range 2 {
				if _, err := src.ExportCache(t.Context(), recs, CacheLocation{Dir: dir, Tag: "v1"}, RemoteOptions{}); err != nil {
					t.Fatal(err)
				}
				blobs, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
				if err != nil {
					t.Fatal(err)
				}
				if len(blobs) < 4 { // manifest, config, two layers
					t.Fatalf("layout holds %d blobs", len(blobs))
				}
				want := map[string]os.FileMode{"index.json": 0o666, "oci-layout": 0o666}
				for _, b := range blobs {
					want[filepath.Join("blobs", "sha256", b.Name())] = 0o444
				}
				for name, mode := range want {
					fi, err := os.Stat(filepath.Join(dir, name))
					if err != nil {
						t.Fatal(err)
					}
					if got := fi.Mode().Perm(); got != mode&^os.FileMode(mask) {
						t.Errorf("%s: mode %04o, want %04o", name, got, mode&^os.FileMode(mask))
					}
				}
			}
		})
	}
}
