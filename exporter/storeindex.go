package exporter

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"

	cplatforms "github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/builder-dev/builder/cache"
)

// A tag of the local store names an image or, for a multi-platform build,
// an image index: the platforms' images and their attestation manifests.
// Readers that want one image (Image, Describe, history, a FROM) get the
// index's image for the host's platform, or for the platform they ask
// (ImageFor); the index itself is what exports and pushes send.

// PlatformImage is one platform's image of a stored index.
type PlatformImage struct {
	Platform string `json:"platform"` // "linux/arm64"
	Digest   string `json:"digest"`   // its manifest
}

// PutIndex stores the images of several platforms, each with its
// attestations (attest nil: none), and their image index, then points
// tags at the index. It returns the index digest.
func (s *Store) PutIndex(ctx context.Context, imgs []v1.Image, attest Attest, tags []string) (v1.Hash, error) {
	names, err := parseTags(tags)
	if err != nil {
		return v1.Hash{}, err
	}
	for i, img := range imgs {
		if _, err := s.putImage(ctx, img); err != nil {
			return v1.Hash{}, fmt.Errorf("put platform image %d: %w", i, err)
		}
	}
	att := make([]AttestedImage, len(imgs))
	for i, img := range imgs {
		att[i] = AttestedImage{Image: img, Attest: attest}
	}
	idx, err := AttestedIndex(att)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("put image index: %w", err)
	}
	descs, children, err := indexImages(idx)
	if err != nil {
		return v1.Hash{}, err
	}
	digest, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	for i, d := range descs {
		if d.Annotations[AnnotationReferenceType] != ReferenceTypeAttestation {
			continue
		}
		if _, err := s.putImage(ctx, children[i]); err != nil {
			return v1.Hash{}, fmt.Errorf("put attestation manifest: %w", err)
		}
		// Inspect finds an image's attestations through this link.
		subject := d.Annotations[AnnotationReferenceDigest]
		if h, err := v1.NewHash(subject); err == nil {
			if err := s.blobs.WriteAreaFile(ctx, cache.Attestations, h.Hex, []byte(digest.String())); err != nil {
				return v1.Hash{}, err
			}
		}
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	if err := s.putBytes(ctx, raw, digest); err != nil {
		return v1.Hash{}, fmt.Errorf("put image index: %w", err)
	}
	for _, n := range names {
		if err := s.blobs.SetTag(ctx, n.Full(), digest.String()); err != nil {
			return v1.Hash{}, fmt.Errorf("put image %s: %w", n.Familiar(), err)
		}
	}
	return digest, nil
}

// ImageFor returns the image ref names for platform p: the index's
// manifest for p (as containerd matches platforms: arm/v7 takes arm/v6)
// when ref names an index, else the image itself, whatever its platform
// (the caller checks it).
func (s *Store) ImageFor(ctx context.Context, ref string, p v1.Platform) (v1.Image, error) {
	digest, err := s.resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	child, ok, err := s.platformChild(ctx, ref, digest, &p)
	if err != nil {
		return nil, err
	}
	if ok {
		digest = child
	}
	return s.imageAt(ctx, ref, digest, true)
}

// IndexOf returns the digest of the image index ref names in the store
// when it holds the image manifest digest; "" when ref names no index (a
// single image, or nothing here) or an index without that image.
func (s *Store) IndexOf(ctx context.Context, ref, digest string) string {
	idx, err := s.resolve(ctx, ref)
	if err != nil {
		return ""
	}
	m, ok, err := s.readIndex(ctx, idx)
	if err != nil || !ok {
		return ""
	}
	for _, d := range m.Manifests {
		if d.Digest.String() == digest {
			return idx
		}
	}
	return ""
}

// Platforms lists the platform images of the index ref names; nil for a
// single image.
func (s *Store) Platforms(ctx context.Context, ref string) ([]PlatformImage, error) {
	digest, err := s.resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	return s.platformsAt(ctx, digest)
}

// platformsAt lists the platform images of the stored index digest; nil
// for a single image, or a manifest that is not here (imageAt names it).
func (s *Store) platformsAt(ctx context.Context, digest string) ([]PlatformImage, error) {
	m, ok, err := s.readIndex(ctx, digest)
	if err != nil || !ok {
		return nil, err
	}
	var out []PlatformImage
	for _, d := range platformManifests(m) {
		out = append(out, PlatformImage{Platform: formatPlatform(d.Platform), Digest: d.Digest.String()})
	}
	return out, nil
}

// readIndex reads the blob digest as an image index; ok is false when it
// is an image manifest.
func (s *Store) readIndex(ctx context.Context, digest string) (*v1.IndexManifest, bool, error) {
	raw, err := s.blobs.ReadBlob(ctx, digest)
	if err != nil {
		return nil, false, nil // imageAt reports it, naming the image
	}
	var probe struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(raw, &probe) != nil || probe.Manifests == nil {
		return nil, false, nil
	}
	var m v1.IndexManifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, false, fmt.Errorf("image index %s: %w", digest, err)
	}
	return &m, true, nil
}

// platformChild returns, when digest is an image index, the digest of its
// manifest for p (nil: the host's platform, else the first image).
func (s *Store) platformChild(ctx context.Context, ref, digest string, p *v1.Platform) (string, bool, error) {
	m, ok, err := s.readIndex(ctx, digest)
	if err != nil || !ok {
		return "", false, err
	}
	descs := platformManifests(m)
	if len(descs) == 0 {
		return "", false, fmt.Errorf("image %s: index %s holds no image", ref, digest)
	}
	want := p
	if want == nil {
		want = &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	matcher := cplatforms.Only(ocispec.Platform{OS: want.OS, Architecture: want.Architecture, Variant: want.Variant})
	var best *v1.Descriptor
	for i := range descs {
		d := &descs[i]
		if d.Platform == nil {
			continue
		}
		got := ocispec.Platform{OS: d.Platform.OS, Architecture: d.Platform.Architecture, Variant: d.Platform.Variant}
		if matcher.Match(got) && (best == nil || matcher.Less(got, ociOf(best.Platform))) {
			best = d
		}
	}
	if p == nil && (best == nil || !s.blobs.HasBlob(best.Digest.String())) {
		// No platform asked: the host's image, else the first one here.
		best = &descs[0]
		for i := range descs {
			if s.blobs.HasBlob(descs[i].Digest.String()) {
				best = &descs[i]
				break
			}
		}
	}
	if best != nil {
		// An index pulled from a registry holds only the platforms pulled.
		if !s.blobs.HasBlob(best.Digest.String()) {
			return "", false, fmt.Errorf("image %s: its %s image is not in the store (only its index is): %w", ref, formatPlatform(best.Platform), cache.ErrNotFound)
		}
		return best.Digest.String(), true, nil
	}
	var have []string
	for _, d := range descs {
		have = append(have, formatPlatform(d.Platform))
	}
	return "", false, fmt.Errorf("image %s has no image for %s (it has %v): %w", ref, formatPlatform(p), have, cache.ErrNotFound)
}

// platformManifests are an index's image manifests, attestations left out.
func platformManifests(m *v1.IndexManifest) []v1.Descriptor {
	var out []v1.Descriptor
	for _, d := range m.Manifests {
		if d.Annotations[AnnotationReferenceType] == ReferenceTypeAttestation || !d.MediaType.IsImage() {
			continue
		}
		out = append(out, d)
	}
	return out
}

func ociOf(p *v1.Platform) ocispec.Platform {
	return ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
}

func formatPlatform(p *v1.Platform) string {
	if p == nil {
		return "unknown"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Descriptor is the descriptor of the stored manifest or index digest.
func (s *Store) Descriptor(ctx context.Context, digest string) (v1.Descriptor, error) {
	raw, err := s.blobs.ReadBlob(ctx, digest)
	if err != nil {
		return v1.Descriptor{}, err
	}
	h, err := v1.NewHash(digest)
	if err != nil {
		return v1.Descriptor{}, err
	}
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return v1.Descriptor{}, fmt.Errorf("manifest %s: %w", digest, err)
	}
	return v1.Descriptor{MediaType: probe.MediaType, Digest: h, Size: int64(len(raw))}, nil
}
