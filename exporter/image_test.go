package exporter

import (
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestNewImageValid(t *testing.T) {
	ls := newFakeLayers()
	img := testImage(t, ls, map[string]string{"hello": "hi"}, map[string]string{"etc/x": "y"})
	checkImage(t, img)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("media types %q / %q", m.MediaType, m.Config.MediaType)
	}
	for i, l := range m.Layers {
		if l.MediaType != types.OCIUncompressedLayer {
			t.Errorf("layer %d media type %q", i, l.MediaType)
		}
	}
	again := testImage(t, ls, map[string]string{"hello": "hi"}, map[string]string{"etc/x": "y"})
	if mustDigest(t, img) != mustDigest(t, again) {
		t.Error("equal inputs gave different digests")
	}
}

func TestNewImageDiffIDMismatch(t *testing.T) {
	ls := newFakeLayers()
	diffID, size := ls.put(layerTar(t, map[string]string{"a": "b"}))
	l, err := LayerFromStore(t.Context(), ls, diffID, size)
	if err != nil {
		t.Fatal(err)
	}
	other := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
	cases := map[string]*v1.ConfigFile{
		"count": {RootFS: v1.RootFS{Type: "layers"}},
		"value": {RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{other}}},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := NewImage(cfg, []v1.Layer{l}); err == nil || !strings.Contains(err.Error(), "diff") {
				t.Fatalf("err = %v, want a diff_id error", err)
			}
		})
	}
}

func TestLayerFromStoreSizeMismatch(t *testing.T) {
	ls := newFakeLayers()
	diffID, size := ls.put(layerTar(t, map[string]string{"a": "b"}))
	l, err := LayerFromStore(t.Context(), ls, diffID, size+1)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, size+10)
	var readErr error
	for readErr == nil {
		_, readErr = rc.Read(buf)
	}
	if !strings.Contains(readErr.Error(), "want") {
		t.Fatalf("err = %v, want a size error", readErr)
	}
}
