package exporter

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/snapshot"
)

// WriteOCI writes images to path as an OCI image layout tar: oci-layout,
// index.json (entries annotated with org.opencontainers.image.ref.name and
// io.containerd.image.name per tag) and blobs/sha256/, with every layer
// compressed with c (gzip by default; uncompressed layers of the layer
// store are then copied by the kernel, see directTar). Compression runs
// on every core and is deterministic; layers that are already compressed
// are copied as they are unless c forces another codec. path is replaced
// atomically.
func WriteOCI(ctx context.Context, path string, images []Tagged, c Compression) error {
	return writeOCI(ctx, path, images, c, nil, false)
}

// WriteOCI is WriteOCI that copies a layer's blob from s when s has it
// compressed with c already (pushed, exported as cache, pulled) instead
// of compressing the layer again. A layer compressed for the archive
// alone is not kept, unless keep says that the caller keeps blobs
// compressed with c anyway (a push or a cache export with that setting
// follows): then it is compressed into s, as a push does, and copied
// from there, once for both.
func (s *Store) WriteOCI(ctx context.Context, path string, images []Tagged, c Compression, keep bool) error {
	return writeOCI(ctx, path, images, c, s, keep)
}

func writeOCI(ctx context.Context, path string, images []Tagged, c Compression, known *Store, keep bool) error {
	a := &ociArchive{ctx: ctx, blobs: blobSet{}, done: map[v1.Hash]v1.Layer{}, c: c, known: known, keep: keep}
	return writeImages(ctx, path, "oci", a, images)
}

type ociArchive struct {
	ctx context.Context
	// d is the archive being written: a layer compressed for it goes
	// there as it is compressed (compressInto).
	d     *detTar
	blobs blobSet
	index []v1.Descriptor
	done  map[v1.Hash]v1.Layer // diffID → layer compressed into d
	c     Compression
	known *Store // where layers compressed with c already are found, or nil
	keep  bool   // compress a layer into known rather than into d
}

func (a *ociArchive) add(d *detTar, t Tagged) error {
	a.d = d
	names, err := parseTags(t.Tags)
	if err != nil {
		return err
	}
	var desc v1.Descriptor
	if len(t.Platforms) > 0 {
		desc, err = a.addIndex(t)
	} else {
		desc, err = a.addImage(t)
	}
	if err != nil {
		return err
	}
	a.index = append(a.index, indexEntries(desc, t, names)...)
	return nil
}

// addImage adds t's image (with its attestations, in an index) and
// returns the descriptor index.json names.
func (a *ociArchive) addImage(t Tagged) (v1.Descriptor, error) {
	img, err := a.compressedImage(t.Image)
	if err != nil {
		return v1.Descriptor{}, err
	}
	desc, err := addImageBlobs(a.blobs, img)
	if err == nil && t.Attest != nil {
		desc, err = a.attested(img, t.Attest)
	}
	return desc, err
}

// addIndex adds the image index of t's platform images (compressed, with
// their attestation manifests) and returns its descriptor.
func (a *ociArchive) addIndex(t Tagged) (v1.Descriptor, error) {
	imgs := make([]AttestedImage, len(t.Platforms))
	for i, p := range t.Platforms {
		img, err := a.compressedImage(p)
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("platform image %d: %w", i, err)
		}
		imgs[i] = AttestedImage{Image: img, Attest: t.Attest}
	}
	idx, err := AttestedIndex(imgs)
	if err != nil {
		return v1.Descriptor{}, err
	}
	return addIndexBlobs(a.blobs, idx)
}

func (a *ociArchive) write(t *detTar) error {
	for _, l := range a.done {
		digest, err := l.Digest()
		if err != nil {
			return err
		}
		delete(a.blobs, digest.Hex) // in the archive already
	}
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
		out[i] = withAnnotations(l, out[i])
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return rebuilt(img, rawCfg, types.OCIConfigJSON, out)
}

func (a *ociArchive) compressedLayer(l v1.Layer) (v1.Layer, error) {
	mt, err := l.MediaType()
	if err != nil {
		return nil, fmt.Errorf("media type: %w", err)
	}
	if a.c.keeps(mt) {
		switch mt {
		case types.DockerLayer:
			return &relabeled{Layer: l, mt: types.OCILayer}, nil
		case types.DockerUncompressedLayer:
			return &relabeled{Layer: l, mt: types.OCIUncompressedLayer}, nil
		}
		return l, nil
	}
	if a.c.codec() == Uncompressed {
		return uncompressedLayer(l)
	}
	diffID, err := l.DiffID()
	if err != nil {
		return nil, fmt.Errorf("diffID: %w", err)
	}
	if c, ok := a.done[diffID]; ok {
		return c, nil
	}
	c, err := a.storedLayer(l, diffID)
	if c == nil && err == nil {
		c, err = a.compressInto(l, diffID)
	}
	if err != nil {
		return nil, err
	}
	a.done[diffID] = c
	return c, nil
}

// storedLayer is l compressed with a.c as a.known holds it — a recorded
// blob, or one compressed into the store now when a.keep — written into
// the archive at once, where compressInto would have put it, so that the
// archive's bytes do not depend on where its blobs came from. It is nil
// (and no error) when a.known has no such blob and does not keep one. A
// recorded blob found damaged as it is copied (the read removes it) is
// cut off the archive again, and nil returned: the caller compresses the
// layer instead.
func (a *ociArchive) storedLayer(l v1.Layer, diffID v1.Hash) (v1.Layer, error) {
	if a.known == nil {
		return nil, nil
	}
	c, recorded, err := a.known.recordedLayer(a.ctx, diffID, a.c)
	if err == nil && !recorded && a.keep {
		c, err = a.known.Compressed(a.ctx, l, a.c, nil)
	}
	if err != nil || c == nil {
		return nil, err
	}
	if err := a.d.blobDirs(); err != nil {
		return nil, err
	}
	_, remote := c.(*remoteBlobLayer)
	at := a.d.out.n
	err = a.copyBlob(c, remote)
	if recorded && !remote && (errors.Is(err, cache.ErrCorrupt) || errors.Is(err, cache.ErrNotFound)) {
		if terr := a.d.out.truncate(at); terr != nil {
			return nil, fmt.Errorf("layer %s: %w", diffID, terr)
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", diffID, err)
	}
	return c, nil
}

// copyBlob writes the compressed layer c into the archive as its blob:
// a blob of a.known by copy_file_range, checked on the way (CopyBlob; the
// archive's fsync starts once the blob is copied, beside the rest of the
// check), a registry's as it is downloaded.
func (a *ociArchive) copyBlob(c v1.Layer, remote bool) error {
	d, err := layerDescriptor(c)
	if err != nil {
		return err
	}
	name := "blobs/sha256/" + d.Digest.Hex
	if !remote {
		return a.d.streamTo(name, d.Size, func(io.Writer) (int64, error) {
			return a.known.blobs.CopyBlob(a.ctx, d.Digest.String(), syncBehindRanges{a.d.out})
		})
	}
	rc, err := c.Compressed()
	if err != nil {
		return err
	}
	return a.d.stream(name, d.Size, rc)
}

// relabeled is a layer under another media type with the same bytes.
type relabeled struct {
	v1.Layer
	mt types.MediaType
}

func (r *relabeled) MediaType() (types.MediaType, error) { return r.mt, nil }

// compressInto compresses l with a.c straight into the archive, as the
// blob entry it becomes, and returns the compressed layer. The entry's
// name is the digest of what it holds, known only at its end: a block is
// reserved for its header, written once the blob and its size are known.
// No copy of the blob is made anywhere else.
func (a *ociArchive) compressInto(l v1.Layer, diffID v1.Hash) (v1.Layer, error) {
	d := a.d
	if err := d.blobDirs(); err != nil {
		return nil, err
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, fmt.Errorf("uncompress: %w", err)
	}
	defer rc.Close()
	at := d.out.n
	if _, err := d.out.Write(zeroBlocks[:blockSize]); err != nil {
		return nil, fmt.Errorf("compress layer %s: %w", diffID, err)
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(d.out, h)}
	err = compressAside(a.ctx, l, rc, diffID, a.c, func(r io.Reader) error {
		_, err := io.CopyBuffer(cw, r, make([]byte, 1<<20))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("compress layer %s: %w", diffID, err)
	}
	digest := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	if err := d.pad(cw.n); err != nil {
		return nil, fmt.Errorf("compress layer %s: %w", diffID, err)
	}
	if err := d.headerAt(at, regHeader("blobs/sha256/"+digest.Hex, cw.n)); err != nil {
		return nil, fmt.Errorf("compress layer %s: %w", diffID, err)
	}
	return &archivedLayer{f: d.out.f, off: at + blockSize, digest: digest, size: cw.n, diffID: diffID, src: l, mt: a.c.mediaType()}, nil
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

// archivedLayer is a compressed layer written into the archive being
// made, at off in the archive's file f.
type archivedLayer struct {
	f      *os.File
	off    int64
	digest v1.Hash
	size   int64
	diffID v1.Hash
	src    v1.Layer
	mt     types.MediaType
}

func (l *archivedLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *archivedLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *archivedLayer) Size() (int64, error)                { return l.size, nil }
func (l *archivedLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *archivedLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(l.f, l.off, l.size)), nil
}
func (l *archivedLayer) Uncompressed() (io.ReadCloser, error) { return l.src.Uncompressed() }

// OCIIndex reads the index.json of an OCI layout: a tar (WriteOCI) or a
// directory (ExtractLayout).
func OCIIndex(path string) (*v1.IndexManifest, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	var data []byte
	if fi.IsDir() {
		data, err = os.ReadFile(filepath.Join(path, "index.json"))
	} else {
		data, err = readTarMember(path, "index.json")
	}
	if err != nil {
		return nil, fmt.Errorf("read index.json of %s: %w", path, err)
	}
	return v1.ParseIndexManifest(bytes.NewReader(data))
}

// readTarMember returns the content of the file name in the tar at path.
func readTarMember(file, name string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("no %s", name)
		}
		if err != nil {
			return nil, err
		}
		if path.Clean(hdr.Name) == name && hdr.Typeflag == tar.TypeReg {
			return io.ReadAll(io.LimitReader(tr, 64<<20))
		}
	}
}

// ExtractLayout writes the OCI (or docker) layout archive at tarPath as
// the directory dir (tar=false), replacing what was there: it is made
// beside dir and renamed into place.
func ExtractLayout(ctx context.Context, tarPath, dir string) error {
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := snapshot.Apply(ctx, tmp, f, snapshot.WithNoWhiteouts()); err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	old := ""
	if _, err := os.Lstat(dir); err == nil {
		old = tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("replace %s: %w", dir, err)
		}
		defer os.RemoveAll(old)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			_ = os.Rename(old, dir)
		}
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	return nil
}
