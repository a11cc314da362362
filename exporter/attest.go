package exporter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The attestation layout BuildKit writes (its compatibility version 30):
// an image index holds each platform's image manifest, then one
// attestation manifest per image: an OCI artifact manifest (platform
// unknown/unknown in the index, annotated with the image it attests)
// whose layers are in-toto statements.
const (
	AnnotationReferenceType   = "vnd.docker.reference.type"
	AnnotationReferenceDigest = "vnd.docker.reference.digest"
	ReferenceTypeAttestation  = "attestation-manifest"
	// AttestationArtifactType is the attestation manifest's artifactType.
	AttestationArtifactType = "application/vnd.docker.attestation.manifest.v1+json"
	// AnnotationPredicateType names a statement layer's predicate type.
	AnnotationPredicateType = "in-toto.io/predicate-type"
	// InTotoMediaType is the media type of a statement layer.
	InTotoMediaType types.MediaType = "application/vnd.in-toto+json"
	// emptyConfigType is the OCI empty descriptor's media type, the
	// config of an artifact manifest.
	emptyConfigType types.MediaType = "application/vnd.oci.empty.v1+json"
)

// Statement is one in-toto statement, encoded, and its predicate type.
type Statement struct {
	PredicateType string
	Data          []byte
}

// Attest makes the statements of an image once its manifest is final:
// img is the image as the output writes it (compressed, rewritten) and
// subject its manifest's descriptor with the image's platform, so the
// statements name what is there.
type Attest func(img v1.Image, subject v1.Descriptor) ([]Statement, error)

// AttestedImage is an image of an index with its attestations (Attest
// nil: none).
type AttestedImage struct {
	Image  v1.Image
	Attest Attest
}

// unknownPlatform is the platform of an attestation manifest in an index.
var unknownPlatform = v1.Platform{OS: "unknown", Architecture: "unknown"}

// AttestedIndex returns the OCI image index of images as BuildKit writes
// it: every image manifest (with its platform, read from its config),
// then the attestation manifest of each image that has attestations.
// Several images make a multi-platform index.
func AttestedIndex(images []AttestedImage) (v1.ImageIndex, error) {
	idx := &rawIndex{children: map[v1.Hash]v1.Image{}}
	var atts []v1.Descriptor
	for i, ai := range images {
		desc, err := platformDescriptor(ai.Image)
		if err != nil {
			return nil, fmt.Errorf("image %d: %w", i, err)
		}
		idx.add(desc, ai.Image)
		if ai.Attest == nil {
			continue
		}
		stmts, err := ai.Attest(ai.Image, desc)
		if err != nil {
			return nil, err
		}
		if len(stmts) == 0 {
			continue
		}
		am, err := AttestationManifest(desc, stmts)
		if err != nil {
			return nil, err
		}
		ad, err := partial.Descriptor(am)
		if err != nil {
			return nil, err
		}
		p := unknownPlatform
		ad.Platform, ad.ArtifactType = &p, "" // BuildKit's entry names no artifactType
		ad.Annotations = map[string]string{
			AnnotationReferenceType:   ReferenceTypeAttestation,
			AnnotationReferenceDigest: desc.Digest.String(),
		}
		idx.children[ad.Digest] = am
		atts = append(atts, *ad)
	}
	idx.manifest.Manifests = append(idx.manifest.Manifests, atts...)
	return idx, idx.encode()
}

// platformDescriptor is img's manifest descriptor with its platform.
func platformDescriptor(img v1.Image) (v1.Descriptor, error) {
	d, err := partial.Descriptor(img)
	if err != nil {
		return v1.Descriptor{}, err
	}
	p, err := ImagePlatform(img)
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: d.MediaType, Size: d.Size, Digest: d.Digest, Platform: p}, nil
}

// ImagePlatform is the platform img's config names.
func ImagePlatform(img v1.Image) (*v1.Platform, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant, OSVersion: cfg.OSVersion}, nil
}

// AttestationManifest is the OCI artifact manifest BuildKit makes of an
// image's statements: artifactType application/vnd.docker.attestation.
// manifest.v1+json, the empty config, one application/vnd.in-toto+json
// layer per statement (annotated with its predicate type) and the image
// as subject.
func AttestationManifest(subject v1.Descriptor, stmts []Statement) (v1.Image, error) {
	emptyCfg := []byte("{}")
	cfgDigest, cfgSize, err := v1.SHA256(bytes.NewReader(emptyCfg))
	if err != nil {
		return nil, err
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  AttestationArtifactType,
		Config:        v1.Descriptor{MediaType: emptyConfigType, Digest: cfgDigest, Size: cfgSize, Data: emptyCfg},
		Subject:       &v1.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
	}
	layers := make([]v1.Layer, 0, len(stmts))
	for _, s := range stmts {
		l := &annotatedLayer{Layer: static.NewLayer(s.Data, InTotoMediaType), ann: map[string]string{AnnotationPredicateType: s.PredicateType}}
		d, err := layerDescriptor(l)
		if err != nil {
			return nil, err
		}
		m.Layers = append(m.Layers, d)
		layers = append(layers, l)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode attestation manifest: %w", err)
	}
	return newRawImage(raw, emptyCfg, layers)
}

// rawIndex is an OCI image index over fixed child manifests.
type rawIndex struct {
	manifest v1.IndexManifest
	raw      []byte
	children map[v1.Hash]v1.Image
}

func (r *rawIndex) add(d v1.Descriptor, img v1.Image) {
	r.manifest.Manifests = append(r.manifest.Manifests, d)
	r.children[d.Digest] = img
}

func (r *rawIndex) encode() error {
	r.manifest.SchemaVersion = 2
	r.manifest.MediaType = types.OCIImageIndex
	raw, err := json.Marshal(r.manifest)
	if err != nil {
		return fmt.Errorf("encode image index: %w", err)
	}
	r.raw = raw
	return nil
}

func (r *rawIndex) MediaType() (types.MediaType, error) { return types.OCIImageIndex, nil }
func (r *rawIndex) Digest() (v1.Hash, error)            { return partial.Digest(r) }
func (r *rawIndex) Size() (int64, error)                { return partial.Size(r) }
func (r *rawIndex) RawManifest() ([]byte, error)        { return r.raw, nil }
func (r *rawIndex) IndexManifest() (*v1.IndexManifest, error) {
	m := r.manifest
	return &m, nil
}

func (r *rawIndex) Image(h v1.Hash) (v1.Image, error) {
	if img, ok := r.children[h]; ok {
		return img, nil
	}
	return nil, fmt.Errorf("image index: no image %s", h)
}

func (r *rawIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	return nil, fmt.Errorf("image index: no index %s", h)
}

// indexImages lists the manifests of idx with their images, in order.
func indexImages(idx v1.ImageIndex) ([]v1.Descriptor, []v1.Image, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, err
	}
	imgs := make([]v1.Image, len(m.Manifests))
	for i, d := range m.Manifests {
		if imgs[i], err = idx.Image(d.Digest); err != nil {
			return nil, nil, err
		}
	}
	return m.Manifests, imgs, nil
}

// addIndexBlobs adds idx and every manifest, config and layer under it to
// set and returns the index's descriptor.
func addIndexBlobs(set blobSet, idx v1.ImageIndex) (v1.Descriptor, error) {
	_, imgs, err := indexImages(idx)
	if err != nil {
		return v1.Descriptor{}, err
	}
	for _, img := range imgs {
		if _, err := addImageBlobs(set, img); err != nil {
			return v1.Descriptor{}, err
		}
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	d, err := partial.Descriptor(idx)
	if err != nil {
		return v1.Descriptor{}, err
	}
	set.addBytes(d.Digest.Hex, raw)
	return v1.Descriptor{MediaType: types.OCIImageIndex, Size: d.Size, Digest: d.Digest}, nil
}

// attested adds the index of img and its attestation manifest to the
// archive and returns the index's descriptor, which index.json names.
func (a *ociArchive) attested(img v1.Image, attest Attest) (v1.Descriptor, error) {
	idx, err := AttestedIndex([]AttestedImage{{Image: img, Attest: attest}})
	if err != nil {
		return v1.Descriptor{}, err
	}
	return addIndexBlobs(a.blobs, idx)
}

// WriteLayers applies layers in order into dir, as WriteLocal applies an
// image's (the filesystem of a stage, scanned for its SBOM).
func WriteLayers(ctx context.Context, dir string, layers []v1.Layer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return applyLayers(ctx, dir, layers)
}
