package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

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
}

func (l *remoteBlobLayer) Digest() (v1.Hash, error)            { return l.rec.Digest, nil }
func (l *remoteBlobLayer) DiffID() (v1.Hash, error)            { return l.rec.DiffID, nil }
func (l *remoteBlobLayer) Size() (int64, error)                { return l.rec.Size, nil }
func (l *remoteBlobLayer) MediaType() (types.MediaType, error) { return l.rec.MediaType, nil }

func (l *remoteBlobLayer) Compressed() (io.ReadCloser, error) {
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

func (l *remoteBlobLayer) Uncompressed() (io.ReadCloser, error) {
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
