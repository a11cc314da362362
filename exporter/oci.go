package exporter

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/pgzip"
)

// gzipBlockSize fixes pgzip's block size: the compressed bytes depend on it,
// never on the number of blocks compressed in parallel.
const gzipBlockSize = 1 << 20

// WriteOCI writes images to path as an OCI image layout tar: oci-layout,
// index.json (entries annotated with org.opencontainers.image.ref.name and
// io.containerd.image.name per tag) and blobs/sha256/, with every layer
// gzip-compressed. Compression runs in parallel and is deterministic;
// layers that are already compressed are copied as they are. path is
// replaced atomically.
func WriteOCI(ctx context.Context, path string, images []Tagged) error {
	spool, err := os.MkdirTemp(filepath.Dir(path), "."+filepath.Base(path)+".layers-*")
	if err != nil {
		return fmt.Errorf("write oci archive %s: %w", path, err)
	}
	defer os.RemoveAll(spool)
	a := &ociArchive{ctx: ctx, spool: spool, blobs: blobSet{}, done: map[v1.Hash]v1.Layer{}}
	return writeImages(ctx, path, "oci", a, images)
}

type ociArchive struct {
	ctx   context.Context
	spool string
	blobs blobSet
	index []v1.Descriptor
	done  map[v1.Hash]v1.Layer // diffID → compressed layer
}

func (a *ociArchive) add(t Tagged) error {
	names, err := parseTags(t.Tags)
	if err != nil {
		return err
	}
	img, err := a.compressedImage(t.Image)
	if err != nil {
		return err
	}
	desc, err := addImageBlobs(a.blobs, img)
	if err != nil {
		return err
	}
	for _, n := range names {
		a.index = append(a.index, annotated(desc, n))
	}
	if len(names) == 0 {
		a.index = append(a.index, desc)
	}
	return nil
}

func (a *ociArchive) write(t *detTar) error {
	if err := t.blobs(a.blobs); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		v    any
	}{{"index.json", indexOf(a.index)}, {"oci-layout", ociLayout()}} {
		data, err := json.Marshal(f.v)
		if err != nil {
			return fmt.Errorf("encode %s: %w", f.name, err)
		}
		if err := t.file(f.name, data); err != nil {
			return err
		}
	}
	return nil
}

// compressedImage returns an OCI image equal to img with gzip layers.
func (a *ociArchive) compressedImage(img v1.Image) (v1.Image, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("layers: %w", err)
	}
	out := make([]v1.Layer, len(layers))
	for i, l := range layers {
		if out[i], err = a.compressedLayer(l); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return imageFromParts(rawCfg, types.OCIConfigJSON, out)
}

func (a *ociArchive) compressedLayer(l v1.Layer) (v1.Layer, error) {
	mt, err := l.MediaType()
	if err != nil {
		return nil, fmt.Errorf("media type: %w", err)
	}
	switch mt {
	case types.OCILayer, types.OCILayerZStd:
		return l, nil
	case types.DockerLayer:
		return &relabeled{Layer: l, mt: types.OCILayer}, nil
	}
	diffID, err := l.DiffID()
	if err != nil {
		return nil, fmt.Errorf("diffID: %w", err)
	}
	if c, ok := a.done[diffID]; ok {
		return c, nil
	}
	c, err := gzipToFile(a.ctx, l, filepath.Join(a.spool, diffID.Hex+".gz"))
	if err != nil {
		return nil, err
	}
	a.done[diffID] = c
	return c, nil
}

// relabeled is a layer under another media type with the same bytes.
type relabeled struct {
	v1.Layer
	mt types.MediaType
}

func (r *relabeled) MediaType() (types.MediaType, error) { return r.mt, nil }

// gzipToFile compresses l's uncompressed stream into file, checking its
// diffID, and returns the gzip layer it holds.
func gzipToFile(ctx context.Context, l v1.Layer, file string) (v1.Layer, error) {
	diffID, err := l.DiffID()
	if err != nil {
		return nil, fmt.Errorf("diffID: %w", err)
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, fmt.Errorf("uncompress: %w", err)
	}
	defer rc.Close()
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("compress layer %s: %w", diffID, err)
	}
	defer f.Close()
	digest, size, err := gzipStream(ctx, f, newVerifyReader(rc, diffID, -1, "layer "+diffID.String()))
	if err != nil {
		return nil, fmt.Errorf("compress layer %s: %w", diffID, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("compress layer %s: %w", diffID, err)
	}
	return &fileLayer{file: file, digest: digest, size: size, diffID: diffID, src: l}, nil
}

// gzipStream writes r gzip-compressed to w with a header that carries no
// name or time, and returns the compressed digest and size.
func gzipStream(ctx context.Context, w io.Writer, r io.Reader) (v1.Hash, int64, error) {
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	bw := bufio.NewWriterSize(cw, 1<<20)
	zw, err := pgzip.NewWriterLevel(bw, pgzip.DefaultCompression)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	// pgzip writes the zero time as 2042 (a wrapped uint32): 0 is "no
	// time", as in Compressed's blobs, so an archive's layer and a pushed
	// one are the same blob.
	zw.Header.ModTime = time.Unix(0, 0)
	if err := zw.SetConcurrency(gzipBlockSize, max(2, runtime.GOMAXPROCS(0))); err != nil {
		return v1.Hash{}, 0, err
	}
	if _, err := io.Copy(zw, contextReader{ctx: ctx, r: r}); err != nil {
		zw.Close()
		return v1.Hash{}, 0, err
	}
	if err := zw.Close(); err != nil {
		return v1.Hash{}, 0, err
	}
	if err := bw.Flush(); err != nil {
		return v1.Hash{}, 0, err
	}
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}, cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// fileLayer is a gzip layer spooled to a file.
type fileLayer struct {
	file   string
	digest v1.Hash
	size   int64
	diffID v1.Hash
	src    v1.Layer
}

func (f *fileLayer) Digest() (v1.Hash, error)             { return f.digest, nil }
func (f *fileLayer) DiffID() (v1.Hash, error)             { return f.diffID, nil }
func (f *fileLayer) Size() (int64, error)                 { return f.size, nil }
func (f *fileLayer) MediaType() (types.MediaType, error)  { return types.OCILayer, nil }
func (f *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(f.file) }
func (f *fileLayer) Uncompressed() (io.ReadCloser, error) { return f.src.Uncompressed() }
