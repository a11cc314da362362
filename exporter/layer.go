package exporter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// tarWriter re-serialises a layer it holds as an uncompressed tar. It is
// the part of snapshot.LayerStore this package needs.
type tarWriter interface {
	WriteTar(ctx context.Context, diffID string, w io.Writer) (int64, error)
}

// blobOpener opens a verified blob by digest. It is the part of
// cache.Store this package needs for reading layers.
type blobOpener interface {
	OpenBlob(ctx context.Context, digest string) (io.ReadCloser, error)
}

// LayerFromStore returns a layer built by us and held in a layer store: an
// uncompressed tar (media type application/vnd.oci.image.layer.v1.tar) whose
// digest is its diffID and whose bytes come from ls.WriteTar through a pipe.
// size is the tar's length. ctx bounds every read of the layer.
func LayerFromStore(ctx context.Context, ls tarWriter, diffID string, size int64) (v1.Layer, error) {
	h, err := v1.NewHash(diffID)
	if err != nil {
		return nil, fmt.Errorf("layer from store %q: %w", diffID, err)
	}
	return &storeLayer{ctx: ctx, ls: ls, diffID: h, size: size}, nil
}

type storeLayer struct {
	ctx    context.Context
	ls     tarWriter
	diffID v1.Hash
	size   int64
}

func (l *storeLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *storeLayer) Digest() (v1.Hash, error)            { return l.diffID, nil }
func (l *storeLayer) Size() (int64, error)                { return l.size, nil }
func (l *storeLayer) MediaType() (types.MediaType, error) { return types.OCIUncompressedLayer, nil }
func (l *storeLayer) Compressed() (io.ReadCloser, error)  { return l.Uncompressed() }

func (l *storeLayer) Uncompressed() (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() {
		n, err := l.ls.WriteTar(l.ctx, l.diffID.String(), pw)
		if err == nil && n != l.size {
			err = fmt.Errorf("layer %s: wrote %d bytes, want %d", l.diffID, n, l.size)
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}

// selfChecked is a layer whose uncompressed stream fails, instead of
// ending, unless its bytes have the layer's diffID: a layer of the layer
// store, whose WriteTar checks that. Its stream needs no second hash.
type selfChecked interface {
	checksDiffID() bool
}

func (l *storeLayer) checksDiffID() bool { return true }

// directTar is a layer that can write its uncompressed tar straight to a
// writer, without a pipe: into an archive file, whose writer takes the
// contents of larger files as ranges the kernel copies
// (snapshot.FileRangeWriter).
type directTar interface {
	// tarTo returns the function writing the tar and its size, or nil
	// when the layer cannot.
	tarTo() func(w io.Writer) (int64, error)
}

func (l *storeLayer) tarTo() func(w io.Writer) (int64, error) {
	return func(w io.Writer) (int64, error) {
		n, err := l.ls.WriteTar(l.ctx, l.diffID.String(), w)
		if err == nil && n != l.size {
			err = fmt.Errorf("layer %s: wrote %d bytes, want %d", l.diffID, n, l.size)
		}
		return n, err
	}
}

// LayerFromBlob returns a layer whose bytes (usually compressed) are the
// blob desc.Digest of store; diffID is the digest of its uncompressed tar,
// as listed in the image config. ctx bounds every read of the layer.
func LayerFromBlob(ctx context.Context, store blobOpener, desc v1.Descriptor, diffID v1.Hash) (v1.Layer, error) {
	if !desc.MediaType.IsLayer() {
		return nil, fmt.Errorf("layer from blob %s: media type %q is not a layer", desc.Digest, desc.MediaType)
	}
	return partial.CompressedToLayer(&blobLayer{ctx: ctx, store: store, desc: desc, diffID: diffID})
}

type blobLayer struct {
	ctx    context.Context
	store  blobOpener
	desc   v1.Descriptor
	diffID v1.Hash
}

func (l *blobLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *blobLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *blobLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *blobLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }

func (l *blobLayer) Compressed() (io.ReadCloser, error) {
	return l.store.OpenBlob(l.ctx, l.desc.Digest.String())
}

// verifyReader checks the sha256 and length of a stream when it reaches EOF.
type verifyReader struct {
	r    io.ReadCloser
	h    hash.Hash
	n    int64
	want v1.Hash
	size int64 // -1: unknown
	name string
}

func newVerifyReader(r io.ReadCloser, want v1.Hash, size int64, name string) io.ReadCloser {
	return &verifyReader{r: r, h: sha256.New(), want: want, size: size, name: name}
}

func (v *verifyReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF {
		if v.size >= 0 && v.n != v.size {
			return n, fmt.Errorf("verify %s: size %d, want %d", v.name, v.n, v.size)
		}
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want.Hex {
			return n, fmt.Errorf("verify %s: digest sha256:%s, want %s", v.name, got, v.want)
		}
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.r.Close() }
