package exporter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/snapshot"
)

// DamagedError says that a part of a stored image is damaged or missing,
// which image needs it, and what to do. It is not "no such image": errors.Is
// with cache.ErrNotFound is false (a build must not pull over it), with
// cache.ErrCorrupt true.
type DamagedError struct {
	Image  string // the reference the image was asked by: a tag or a digest
	Part   string // "manifest", "config", "layer 2 (RUN make)"
	Digest string // the blob or layer that is damaged or missing
	Err    error  // what is wrong with it
	Advice string // what to do
}

func (e *DamagedError) Error() string {
	s := fmt.Sprintf("image %s: %s %s: %v", e.Image, e.Part, e.Digest, e.Err)
	if e.Advice != "" {
		s += "; " + e.Advice
	}
	return s
}

func (e *DamagedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, cache.ErrCorrupt) true.
func (e *DamagedError) Is(target error) bool { return target == cache.ErrCorrupt }

// errMissing is the cause of a DamagedError for a blob that is gone; it
// does not wrap cache.ErrNotFound on purpose.
var errMissing = errors.New("missing from the store (deleted, or removed as damaged)")

// errNoLayer is the cause for a layer with neither a blob nor a layer
// directory that reproduces its bytes.
var errNoLayer = errors.New("not in the store: no blob, and no layer directory that reproduces it")

// cause turns a read error into the cause of a DamagedError.
func cause(err error) error {
	if errors.Is(err, cache.ErrNotFound) {
		return errMissing
	}
	return err
}

// isDamage reports whether err says stored data is damaged (not an I/O or
// a context error).
func isDamage(err error) bool {
	return errors.Is(err, cache.ErrCorrupt) || errors.Is(err, snapshot.ErrModified) || errors.Is(err, errMissing) || errors.Is(err, errNoLayer)
}

// damaged describes damage to a part of the image digest (asked by ref).
// For a layer (index >= 0) the image that brought the layer in — the
// tagged image with the fewest layers that has it, the base image when an
// image built on it is asked — is the one to pull, load or build again.
func (s *Store) damaged(ctx context.Context, ref, digest, part, blob string, layer int, err error) *DamagedError {
	origin, originDigest := ref, digest
	if layer >= 0 {
		if o, od, ok := s.layerOrigin(ctx, blob, digest); ok {
			origin, originDigest = o, od
		}
	}
	advice := s.advice(ctx, origin, originDigest)
	if origin != ref {
		advice = fmt.Sprintf("the layer comes from image %s: %s, then build %s again", origin, advice, ref)
	}
	return &DamagedError{Image: ref, Part: part, Digest: blob, Err: cause(err), Advice: advice}
}

// advice says how to get the image digest (asked by ref) back: build it
// again when a build record says it was built here, else pull or load it.
func (s *Store) advice(ctx context.Context, ref, digest string) string {
	tag := tagOf(ref) != ""
	var a string
	if s.c != nil {
		if s.c.BuiltHere(ctx, digest) {
			a = "it was built here: run its build again (builder build"
			if tag {
				a += " -t " + ref
			}
			a += " ...)"
		}
	}
	if a == "" {
		if tag {
			a = fmt.Sprintf("pull or load it again (builder pull %s, or builder load -i FILE)", ref)
		} else {
			a = "pull or load it again (builder pull REF, or builder load -i FILE)"
		}
	}
	if tag {
		a += fmt.Sprintf(", or remove the tag (builder rmi %s)", ref)
	}
	return a
}

// layerOrigin finds the tagged image with the fewest layers that has the
// layer blob, other than by being built on another such image: the image
// that brought it in. It returns its familiar name and digest.
func (s *Store) layerOrigin(ctx context.Context, blob, digest string) (string, string, bool) {
	tags, err := s.blobs.Tags(ctx)
	if err != nil {
		return "", "", false
	}
	best, bestDigest, bestN := "", "", -1
	for _, t := range tags {
		m, _, err := s.peekManifest(ctx, t.Digest)
		if err != nil {
			continue
		}
		has := false
		for _, l := range m.Layers {
			has = has || l.Digest.String() == blob
		}
		if !has {
			continue
		}
		// Prefer fewer layers; for equals, the image asked about.
		if bestN < 0 || len(m.Layers) < bestN || (len(m.Layers) == bestN && t.Digest == digest) {
			best, bestDigest, bestN = cache.FamiliarName(t.Name), t.Digest, len(m.Layers)
		}
	}
	return best, bestDigest, bestN >= 0
}

// peekManifest reads a manifest and its config without removing damaged
// blobs (for diagnosis).
func (s *Store) peekManifest(ctx context.Context, digest string) (*v1.Manifest, *v1.ConfigFile, error) {
	raw, err := s.peek(ctx, digest)
	if err != nil {
		return nil, nil, err
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, nil, err
	}
	rawCfg, err := s.peek(ctx, m.Config.Digest.String())
	if err != nil {
		return &m, nil, err
	}
	cfg, err := v1.ParseConfigFile(strings.NewReader(string(rawCfg)))
	if err != nil {
		return &m, nil, err
	}
	return &m, cfg, nil
}

// peek reads a verified blob, leaving a damaged one in place.
func (s *Store) peek(ctx context.Context, digest string) ([]byte, error) {
	if s.c != nil {
		return s.c.PeekBlob(ctx, digest)
	}
	return s.blobs.ReadBlob(ctx, digest)
}

// layerStep is the history entry (created_by) of the image's i-th layer.
func layerStep(cfg *v1.ConfigFile, i int) string {
	if cfg == nil {
		return ""
	}
	n := 0
	for _, h := range cfg.History {
		if h.EmptyLayer {
			continue
		}
		if n == i {
			return h.CreatedBy
		}
		n++
	}
	return ""
}

func layerPart(cfg *v1.ConfigFile, i int) string {
	if by := layerStep(cfg, i); by != "" {
		return fmt.Sprintf("layer %d (%s)", i, strings.TrimSuffix(by, " # buildkit"))
	}
	return fmt.Sprintf("layer %d", i)
}

// namedLayer is a layer of a stored image whose read errors that say it is
// damaged name the image, the layer and what to do.
type namedLayer struct {
	v1.Layer
	wrap func(error) error
}

func (l *namedLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, l.wrap(err)
	}
	return &wrapReader{rc, l.wrap}, nil
}

func (l *namedLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Uncompressed()
	if err != nil {
		return nil, l.wrap(err)
	}
	return &wrapReader{rc, l.wrap}, nil
}

func (l *namedLayer) tarTo() func(w io.Writer) (int64, error) {
	dt, ok := l.Layer.(directTar)
	if !ok {
		return nil
	}
	f := dt.tarTo()
	if f == nil {
		return nil
	}
	return func(w io.Writer) (int64, error) {
		n, err := f(w)
		if err != nil {
			err = l.wrap(err)
		}
		return n, err
	}
}

// RemoteBacked forwards the layer's: see remoteBlobLayer.
func (l *namedLayer) RemoteBacked() bool {
	rb, ok := l.Layer.(interface{ RemoteBacked() bool })
	return ok && rb.RemoteBacked()
}

type wrapReader struct {
	io.ReadCloser
	wrap func(error) error
}

func (r *wrapReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = r.wrap(err)
	}
	return n, err
}

// missingLayer stands for a layer of a stored image that cannot be read:
// describing the image (history, inspect) works, reading fails with err.
type missingLayer struct {
	desc   v1.Descriptor
	diffID v1.Hash
	err    error
}

func (l *missingLayer) Digest() (v1.Hash, error)             { return l.desc.Digest, nil }
func (l *missingLayer) DiffID() (v1.Hash, error)             { return l.diffID, nil }
func (l *missingLayer) Size() (int64, error)                 { return l.desc.Size, nil }
func (l *missingLayer) MediaType() (types.MediaType, error)  { return l.desc.MediaType, nil }
func (l *missingLayer) Compressed() (io.ReadCloser, error)   { return nil, l.err }
func (l *missingLayer) Uncompressed() (io.ReadCloser, error) { return nil, l.err }
