package exporter

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// fakeLayers is an in-memory layer store.
type fakeLayers struct {
	mu   sync.Mutex
	tars map[string][]byte
}

func newFakeLayers() *fakeLayers { return &fakeLayers{tars: map[string][]byte{}} }

func (f *fakeLayers) put(data []byte) (string, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
	f.tars[d] = data
	return d, int64(len(data))
}

func (f *fakeLayers) Has(diffID string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.tars[diffID]
	return ok
}

func (f *fakeLayers) WriteTar(ctx context.Context, diffID string, w io.Writer) (int64, error) {
	f.mu.Lock()
	data, ok := f.tars[diffID]
	f.mu.Unlock()
	if !ok {
		return 0, fmt.Errorf("layer %s: not found", diffID)
	}
	n, err := w.Write(data)
	return int64(n), err
}

// layerTar returns a deterministic tar holding files (name → content).
func layerTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		hdr := &tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[n])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testImage builds an image of store layers, one per file set.
func testImage(t *testing.T, ls *fakeLayers, sets ...map[string]string) v1.Image {
	t.Helper()
	cfg := &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: time.Unix(0, 0).UTC()},
		Config:       v1.Config{Cmd: []string{"/hello"}, Env: []string{"PATH=/bin"}},
		RootFS:       v1.RootFS{Type: "layers"},
	}
	var layers []v1.Layer
	for _, files := range sets {
		diffID, size := ls.put(layerTar(t, files))
		l, err := LayerFromStore(t.Context(), ls, diffID, size)
		if err != nil {
			t.Fatal(err)
		}
		h, _ := l.DiffID()
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, h)
		cfg.History = append(cfg.History, v1.History{Created: cfg.Created, CreatedBy: "COPY files /"})
		layers = append(layers, l)
	}
	img, err := NewImage(cfg, layers)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func mustDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkImage validates img: GGCR's structural checks (validate.Image
// assumes gzip layers, so its fast mode) plus every layer's digest, size
// and diffID recomputed from its content.
func checkImage(t *testing.T, img v1.Image) {
	t.Helper()
	if err := validate.Image(img, validate.Fast); err != nil {
		t.Fatalf("validate: %v", err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != len(m.Layers) || len(layers) != len(cfg.RootFS.DiffIDs) {
		t.Fatalf("%d layers, %d manifest layers, %d diff_ids", len(layers), len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	for i, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		digest, size, err := v1.SHA256(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		if digest != m.Layers[i].Digest || size != m.Layers[i].Size {
			t.Errorf("layer %d: content %s/%d, manifest %s/%d", i, digest, size, m.Layers[i].Digest, m.Layers[i].Size)
		}
		rc, err = l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		diffID, _, err := v1.SHA256(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		if diffID != cfg.RootFS.DiffIDs[i] {
			t.Errorf("layer %d: uncompressed %s, diff_id %s", i, diffID, cfg.RootFS.DiffIDs[i])
		}
	}
}

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithCancel(t.Context())
}
