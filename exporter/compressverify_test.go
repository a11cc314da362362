package exporter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// modifiedTars is a layer store whose layer streams its bytes, then fails
// as snapshot.LayerStore.WriteTar does for a layer changed on disk.
type modifiedTars struct{ data []byte }

var errChanged = errors.New("modified on disk")

func (m modifiedTars) WriteTar(_ context.Context, _ string, w io.Writer) (int64, error) {
	n, err := w.Write(m.data)
	if err != nil {
		return int64(n), err
	}
	return int64(n), errChanged
}

// TestCompressVerifiedHashesOtherStreams: a stream that does not check
// itself is hashed, and content without the layer's diffID fails.
func TestCompressVerifiedHashesOtherStreams(t *testing.T) {
	data := layerTar(t, map[string]string{"a": "x"})
	wrong, err := v1.NewHash("sha256:" + strings.Repeat("0", 64))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []Compression{{}, {Codec: Zstd}} {
		err := compressVerified(t.Context(), io.Discard, nil, bytes.NewReader(data), wrong, c)
		if err == nil || !strings.Contains(err.Error(), "layer content has digest") {
			t.Errorf("%s of content with another digest: %v", c, err)
		}
	}
}

// TestCompressStoreLayerFailsWithItsStream: a layer of the layer store is
// compressed without a second hash of its stream, and the stream's own
// check (WriteTar's error for a layer changed on disk) fails the
// compression.
func TestCompressStoreLayerFailsWithItsStream(t *testing.T) {
	data := layerTar(t, map[string]string{"a": "x"})
	diffID, size := newFakeLayers().put(data)
	for _, c := range []Compression{{}, {Codec: Zstd}} {
		l, err := LayerFromStore(t.Context(), modifiedTars{data}, diffID, size)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := compressOne(t, l, c); !errors.Is(err, errChanged) {
			t.Errorf("%s of a layer whose stream failed: %v", c, err)
		}
		good, err := LayerFromStore(t.Context(), modifiedTarsOK{data}, diffID, size)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := compressOne(t, good, c); err != nil {
			t.Errorf("%s of a good layer: %v", c, err)
		}
	}
}

// compressOne compresses l with c as an OCI archive's layer, into a
// scratch archive.
func compressOne(t *testing.T, l v1.Layer, c Compression) (v1.Layer, error) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "archive.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	diffID, err := l.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	a := &ociArchive{ctx: t.Context(), d: &detTar{ctx: t.Context(), out: newArchiveWriter(f)}, c: c}
	return a.compressInto(l, diffID)
}

// modifiedTarsOK streams its bytes and succeeds.
type modifiedTarsOK struct{ data []byte }

func (m modifiedTarsOK) WriteTar(_ context.Context, _ string, w io.Writer) (int64, error) {
	n, err := w.Write(m.data)
	return int64(n), err
}
