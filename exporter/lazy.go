package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/docker/go-units"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// A layer hit in a remote cache is not downloaded when it is hit: the
// import records its compressed blob (compressed/<diffID hex>.<codec>.json,
// whose blob is not local) and the repositories that hold that blob
// (sources/), which together make the layer "remote-backed". It is
// fetched only when something needs its bytes: a snapshot over it (a later
// step that runs: LayerStore's fetcher is Materialize), an archive, or a
// push to a registry that has no copy it can mount. A push to the registry
// of the cache skips it (HEAD) or mounts it, downloading nothing.

// Traffic counts what a process moved for remote caches: bytes and time of
// imports (manifests, configs, layers fetched) and exports (bytes read
// for upload, time of the export).
type Traffic struct {
	ImportBytes, ImportLayers, ImportNanos atomic.Int64
	ExportBytes, ExportNanos               atomic.Int64
}

// CacheTraffic is the store's remote cache traffic so far.
func (s *Store) CacheTraffic() *Traffic { return &s.traffic }

// SetRemoteOptions sets how the store reaches registries when it fetches
// a remote-backed layer by itself (Materialize, a push's reads).
func (s *Store) SetRemoteOptions(o RemoteOptions) { s.remoteOpts = o }

// remoteCodecs are the settings a remote-backed record can have: imports
// record blobs under their codec's default setting.
var remoteCodecs = []Compression{{}, {Codec: Zstd}, {Codec: Uncompressed}}

// remoteRecord returns the record of a compressed blob of diffID that is
// not in the store but known to be in a registry, and the repositories
// holding it. With only set, just that setting is looked at.
func (s *Store) remoteRecord(diffID v1.Hash, only *Compression) (compressedRecord, []string, bool) {
	codecs := remoteCodecs
	if only != nil {
		codecs = []Compression{*only}
	}
	for _, c := range codecs {
		rec, err := s.readCompressedRecord(diffID, c)
		if err != nil || s.blobs.HasBlob(rec.Digest.String()) {
			continue
		}
		if repos := s.sourcesOf(rec.Digest); len(repos) > 0 {
			return rec, repos, true
		}
	}
	return compressedRecord{}, nil, false
}

// remoteBlob returns the remote-backed record of diffID whose blob is
// d's, for d a compressed (or plain) layer of a lazily pulled image.
func (s *Store) remoteBlob(diffID v1.Hash, d v1.Descriptor) (compressedRecord, []string, bool) {
	switch d.MediaType {
	case types.OCILayer, types.DockerLayer, types.OCILayerZStd, types.OCIUncompressedLayer, types.DockerUncompressedLayer:
	default:
		return compressedRecord{}, nil, false
	}
	c := codecOf(d.MediaType)
	rec, repos, ok := s.remoteRecord(diffID, &c)
	if !ok || rec.Digest != d.Digest {
		return compressedRecord{}, nil, false
	}
	return rec, repos, true
}

// putRemote stores img, pulled lazily from repo: its config and manifest,
// and for each layer the store lacks a record of its blob (the sources of
// which Pull remembers), so the layer is remote-backed.
func (s *Store) putRemote(ctx context.Context, img v1.Image, repo name.Repository, tags []string) (v1.Hash, error) {
	m, err := img.Manifest()
	if err != nil {
		return v1.Hash{}, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return v1.Hash{}, fmt.Errorf("config lists %d diff_ids for %d layers", len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	s.rememberSources(ctx, repo, layerDigests(img))
	for i, d := range m.Layers {
		diffID := cfg.RootFS.DiffIDs[i]
		if _, _, ok := s.remoteBlob(diffID, d); ok || s.blobs.HasBlob(d.Digest.String()) {
			continue
		}
		switch d.MediaType {
		case types.OCILayer, types.DockerLayer, types.OCILayerZStd:
		default:
			// Foreign or unknown layers are fetched now, as by Load.
			l, err := img.LayerByDigest(d.Digest)
			if err == nil {
				err = s.loadLayer(ctx, l, s.remoteOpts.Progress)
			}
			if err != nil {
				return v1.Hash{}, fmt.Errorf("layer %d: %w", i, err)
			}
			continue
		}
		c := codecOf(d.MediaType)
		if _, ok := s.compressedRecord(diffID, c); ok {
			continue
		}
		if err := s.writeCompressedRecord(ctx, newCompressedRecord(diffID, d.Digest, d.Size, c)); err != nil {
			return v1.Hash{}, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return s.Put(ctx, img, tags)
}

// remoteBacked reports whether the layer diffID can be fetched from a
// registry though neither it nor a compressed copy is here.
func (s *Store) remoteBacked(diffID v1.Hash) bool {
	_, _, ok := s.remoteRecord(diffID, nil)
	return ok
}

// Materialize brings the remote-backed layer diffID into the layer store
// (and its blob into the blob store), reading it once from the first
// repository that serves it. A layer already here is left as it is.
func (s *Store) Materialize(ctx context.Context, diffID string) error {
	if s.layers.Has(diffID) {
		return nil
	}
	d, err := v1.NewHash(diffID)
	if err != nil {
		return err
	}
	rec, repos, ok := s.remoteRecord(d, nil)
	if !ok {
		return fmt.Errorf("layer %s: not here and not known in any registry: %w", diffID, errNoLayer)
	}
	start := time.Now()
	defer func() { s.traffic.ImportNanos.Add(int64(time.Since(start))) }()
	s.remoteOpts.notify(fmt.Sprintf("fetching layer %s (%s)", shortDigest(rec.Digest), units.HumanSize(float64(rec.Size))))
	var errs []error
	for _, repo := range repos {
		rc, err := s.openRemoteBlob(ctx, repo, rec.Digest)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = s.storeAndUnpack(ctx, &countingReadCloser{ReadCloser: rc, n: &s.traffic.ImportBytes}, v1.Descriptor{Digest: rec.Digest, Size: rec.Size, MediaType: rec.MediaType}, d)
		rc.Close()
		if err == nil {
			s.traffic.ImportLayers.Add(1)
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("fetch layer %s (blob %s): %w", diffID, rec.Digest, errors.Join(errs...))
}

// fetch materializes the layer diffID through the layer store's fetcher
// when one is set (the store that knows the registries' options), else
// with this store's options.
func (s *Store) fetch(ctx context.Context, diffID string) error {
	if s.ls != nil && s.ls.Fetcher() != nil {
		return s.ls.Fetcher()(ctx, diffID)
	}
	return s.Materialize(ctx, diffID)
}

// openRemoteBlob opens the blob digest of repo ("registry/repository").
func (s *Store) openRemoteBlob(ctx context.Context, repo string, digest v1.Hash) (io.ReadCloser, error) {
	o := s.remoteOpts
	r, err := o.parse(repo + "@" + digest.String())
	if err != nil {
		return nil, err
	}
	dr, ok := r.(name.Digest)
	if !ok {
		return nil, fmt.Errorf("%s: not a digest reference", r)
	}
	l, err := remote.Layer(dr, o.remote(ctx, dr.Context().Registry)...)
	if err != nil {
		return nil, classify(err)
	}
	return l.Compressed()
}

// remoteBlobLayer is a compressed blob in a registry, for a push: the
// registry it goes to skips it (HEAD) or mounts it from a repository of
// the same registry (remote.MountableLayer through Store.mountable); its
// bytes are read from that repository only when it must be uploaded
// elsewhere.
type remoteBlobLayer struct {
	s     *Store
	ctx   context.Context
	rec   compressedRecord
	repos []string
	mt    types.MediaType // the manifest's, when it names the layer; else rec's
}

func (l *remoteBlobLayer) Digest() (v1.Hash, error) { return l.rec.Digest, nil }
func (l *remoteBlobLayer) DiffID() (v1.Hash, error) { return l.rec.DiffID, nil }
func (l *remoteBlobLayer) Size() (int64, error)     { return l.rec.Size, nil }

func (l *remoteBlobLayer) MediaType() (types.MediaType, error) {
	if l.mt != "" {
		return l.mt, nil
	}
	return l.rec.MediaType, nil
}

// RemoteBacked says the layer's bytes are in a registry: a build does not
// unpack it until a step needs it (the layer store's fetcher).
func (l *remoteBlobLayer) RemoteBacked() bool { return !l.s.layers.Has(l.rec.DiffID.String()) }

func (l *remoteBlobLayer) Compressed() (io.ReadCloser, error) {
	if l.s.blobs.HasBlob(l.rec.Digest.String()) {
		return l.s.blobs.OpenBlob(l.ctx, l.rec.Digest.String())
	}
	var errs []error
	for _, repo := range l.repos {
		rc, err := l.s.openRemoteBlob(l.ctx, repo, l.rec.Digest)
		if err == nil {
			return &countingReadCloser{ReadCloser: rc, n: &l.s.traffic.ImportBytes}, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("blob %s: %w", l.rec.Digest, errors.Join(errs...))
}

// Uncompressed fetches the layer into the stores first (once, for every
// later reader), then reads the local blob.
func (l *remoteBlobLayer) Uncompressed() (io.ReadCloser, error) {
	if err := l.s.fetch(l.ctx, l.rec.DiffID.String()); err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	zr, err := decompress(rc, l.rec.MediaType)
	if err != nil {
		rc.Close()
		return nil, err
	}
	return readCloser{zr, func() error { zr.Close(); return rc.Close() }}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

type countingReadCloser struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingReadCloser) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}
