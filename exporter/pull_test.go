package exporter

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// onceLayer is a gzip layer whose Compressed stream counts its opens and
// bytes read, as a registry would serve it.
type onceLayer struct {
	gz     []byte
	diffID v1.Hash
	opens  atomic.Int32
	read   atomic.Int64
}

func newOnceLayer(t *testing.T, tarData []byte, diffID v1.Hash) *onceLayer {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(tarData)
	zw.Close()
	return &onceLayer{gz: b.Bytes(), diffID: diffID}
}

func shaHash(data []byte) v1.Hash {
	s := sha256.Sum256(data)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func (l *onceLayer) Digest() (v1.Hash, error)            { return shaHash(l.gz), nil }
func (l *onceLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *onceLayer) Size() (int64, error)                { return int64(len(l.gz)), nil }
func (l *onceLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *onceLayer) Uncompressed() (io.ReadCloser, error) {
	panic("a pull must read the compressed stream once, not Uncompressed")
}
func (l *onceLayer) Compressed() (io.ReadCloser, error) {
	l.opens.Add(1)
	return io.NopCloser(&countReader{r: bytes.NewReader(l.gz), n: &l.read}), nil
}

type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestLoadLayerStreams: a layer the store lacks is read once and becomes
// both a verified blob and an unpacked layer; a stream whose content is
// not its diffID is an error and leaves no layer (its blob, whole and
// matching its own digest, may stay, as when blobs were stored first).
func TestLoadLayerStreams(t *testing.T) {
	data := layerTar(t, map[string]string{"big": strings.Repeat("streamed ", 100000), "small": "x"})
	l := newOnceLayer(t, data, shaHash(data))
	st := newTestStore(t)
	if err := st.loadLayer(t.Context(), l, nil); err != nil {
		t.Fatal(err)
	}
	d, _ := l.Digest()
	if l.opens.Load() != 1 || l.read.Load() != int64(len(l.gz)) {
		t.Errorf("stream opened %d times, %d of %d bytes read; want once, whole", l.opens.Load(), l.read.Load(), len(l.gz))
	}
	if !st.blobs.HasBlob(d.String()) || !st.layers.Has(l.diffID.String()) {
		t.Fatalf("after the load: blob %v, layer %v", st.blobs.HasBlob(d.String()), st.layers.Has(l.diffID.String()))
	}
	if blob, err := st.blobs.ReadBlob(t.Context(), d.String()); err != nil || !bytes.Equal(blob, l.gz) {
		t.Errorf("the stored blob is %d bytes (%v), want the %d bytes served", len(blob), err, len(l.gz))
	}

	bad := newOnceLayer(t, data, shaHash([]byte("another layer")))
	st2 := newTestStore(t)
	err := st2.loadLayer(t.Context(), bad, nil)
	if err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("load of a layer that is not its diffID: %v", err)
	}
	if st2.layers.Has(bad.diffID.String()) {
		t.Error("a layer that is not its diffID was unpacked")
	}
}
