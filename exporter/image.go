// Package exporter assembles images with go-containerregistry, writes them
// as docker-save and OCI layout archives or into a directory, reads such
// archives back, and is the image view of the local store.
package exporter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Tagged is an image together with the references it is known by
// ("app:v1", "localhost:5000/x/y:tag"). Tags may be empty.
type Tagged struct {
	Image v1.Image
	Tags  []string
	// Attest, if not nil, attaches attestations: an OCI archive then
	// holds an image index of the image and its attestation manifest.
	Attest Attest
	// Platforms, when set, are the images of a multi-platform build, one
	// per platform: the tags then name an image index of them (with their
	// attestation manifests), and Image is the one a format that holds a
	// single image per name takes (the host's platform, else the first).
	Platforms []v1.Image
	// Created, when set, is written on the image's entries of an
	// archive's index.json as org.opencontainers.image.created (RFC 3339,
	// UTC), as BuildKit's oci and docker exporters annotate them: the
	// build's epoch, else the time of the export.
	Created time.Time
	// Platform, when set, is written on the index.json entries of Image
	// when they name it alone (no Platforms, no Attest), as BuildKit's oci
	// and docker exporters name a single-platform build's image.
	Platform *v1.Platform
}

// NewImage returns a deterministic image with an OCI manifest and an OCI
// config media type, made of cfg and layers. cfg.RootFS.DiffIDs must list the
// layers' diffIDs in order. The manifest is computed once, so the image's
// digest depends only on cfg and the layers' descriptors.
func NewImage(cfg *v1.ConfigFile, layers []v1.Layer) (v1.Image, error) {
	if cfg == nil {
		return nil, fmt.Errorf("new image: nil config")
	}
	if err := checkDiffIDs(cfg, layers); err != nil {
		return nil, fmt.Errorf("new image: %w", err)
	}
	rawCfg, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("new image: encode config: %w", err)
	}
	return imageFromParts(rawCfg, types.OCIConfigJSON, layers)
}

// NewImageRaw is NewImage for a config given as JSON bytes, kept byte for
// byte: fields that v1.ConfigFile does not model (e.g. a healthcheck's
// StartInterval) survive.
func NewImageRaw(rawCfg []byte, layers []v1.Layer) (v1.Image, error) {
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return nil, fmt.Errorf("new image: decode config: %w", err)
	}
	if err := checkDiffIDs(cfg, layers); err != nil {
		return nil, fmt.Errorf("new image: %w", err)
	}
	return imageFromParts(rawCfg, types.OCIConfigJSON, layers)
}

// rebuilt is src with another config or other layers (compressed,
// rewritten), keeping the annotations of src's manifest.
func rebuilt(src v1.Image, rawCfg []byte, cfgType types.MediaType, layers []v1.Layer) (v1.Image, error) {
	m, err := src.Manifest()
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return imageFromParts(rawCfg, cfgType, layers, m.Annotations)
}

// imageFromParts builds the OCI manifest for a raw config and its layers,
// with the manifest annotations ann (if any).
func imageFromParts(rawCfg []byte, cfgType types.MediaType, layers []v1.Layer, ann ...map[string]string) (v1.Image, error) {
	cfgDigest, cfgSize, err := v1.SHA256(bytes.NewReader(rawCfg))
	if err != nil {
		return nil, fmt.Errorf("hash config: %w", err)
	}
	// Encoded as BuildKit's image writer encodes a manifest (image-spec's
	// member order, indented by two spaces), so that equal images are
	// equal bytes, and have the same digest, from either builder.
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: string(types.OCIManifestSchema1),
		Config:    ocispec.Descriptor{MediaType: string(cfgType), Digest: digest.Digest(cfgDigest.String()), Size: cfgSize},
		Layers:    make([]ocispec.Descriptor, 0, len(layers)),
	}
	for i, l := range layers {
		d, err := layerDescriptor(l)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: string(d.MediaType), Digest: digest.Digest(d.Digest.String()), Size: d.Size, URLs: d.URLs, Annotations: d.Annotations})
	}
	for _, a := range ann {
		m.Annotations = a
	}
	rawManifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return newRawImage(rawManifest, rawCfg, layers)
}

func checkDiffIDs(cfg *v1.ConfigFile, layers []v1.Layer) error {
	if len(cfg.RootFS.DiffIDs) != len(layers) {
		return fmt.Errorf("config lists %d diff_ids but image has %d layers", len(cfg.RootFS.DiffIDs), len(layers))
	}
	for i, l := range layers {
		d, err := l.DiffID()
		if err != nil {
			return fmt.Errorf("layer %d diffID: %w", i, err)
		}
		if d != cfg.RootFS.DiffIDs[i] {
			return fmt.Errorf("layer %d diffID %s does not match config diff_id %s", i, d, cfg.RootFS.DiffIDs[i])
		}
	}
	return nil
}

func layerDescriptor(l v1.Layer) (v1.Descriptor, error) {
	d, err := l.Digest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("digest: %w", err)
	}
	size, err := l.Size()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("size: %w", err)
	}
	mt, err := l.MediaType()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("media type: %w", err)
	}
	desc := v1.Descriptor{MediaType: ociLayerType(mt), Digest: d, Size: size}
	if a, ok := l.(annotator); ok {
		desc.Annotations = a.Annotations()
	}
	return desc, nil
}

// annotator is a layer whose manifest descriptor carries annotations.
type annotator interface{ Annotations() map[string]string }

// withAnnotations returns dst, the layer src became on its way out
// (compressed, relabeled, announced), with src's annotations.
func withAnnotations(src, dst v1.Layer) v1.Layer {
	a, ok := src.(annotator)
	if !ok {
		return dst
	}
	if _, ok := dst.(annotator); ok {
		return dst
	}
	return &annotatedLayer{Layer: dst, ann: a.Annotations()}
}

// ociLayerType maps Docker layer media types onto their OCI equivalents (the
// bytes are the same) so that an OCI manifest is consistently OCI.
func ociLayerType(mt types.MediaType) types.MediaType {
	switch mt {
	case types.DockerLayer:
		return types.OCILayer
	case types.DockerUncompressedLayer:
		return types.OCIUncompressedLayer
	case types.DockerForeignLayer:
		return types.OCIRestrictedLayer
	}
	return mt
}

// rawImage is a partial.CompressedImageCore over a fixed manifest, a fixed
// config and the layers the manifest names.
type rawImage struct {
	manifest []byte
	mt       types.MediaType
	config   []byte
	layers   map[v1.Hash]v1.Layer
	order    []v1.Hash // the manifest's layers
}

// newRawImage checks that every layer the manifest lists is among layers
// and that the config's diff_ids pair up with them.
func newRawImage(rawManifest, rawCfg []byte, layers []v1.Layer) (v1.Image, error) {
	var m v1.Manifest
	if err := json.Unmarshal(rawManifest, &m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	ri := &rawImage{manifest: rawManifest, mt: m.MediaType, config: rawCfg, layers: map[v1.Hash]v1.Layer{}}
	if ri.mt == "" {
		ri.mt = types.OCIManifestSchema1
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, fmt.Errorf("layer digest: %w", err)
		}
		ri.layers[d] = l
	}
	for i, d := range m.Layers {
		if _, ok := ri.layers[d.Digest]; !ok {
			return nil, fmt.Errorf("manifest layer %d (%s) has no content", i, d.Digest)
		}
		ri.order = append(ri.order, d.Digest)
	}
	img, err := partial.CompressedToImage(ri)
	if err != nil {
		return nil, err
	}
	return &rawImageLayers{Image: img, ri: ri}, nil
}

// rawImageLayers gives the layers a rawImage was made of as they are, not
// wrapped by go-containerregistry, so their own methods (a stored layer
// writing its tar straight into an archive: directTar) stay reachable.
type rawImageLayers struct {
	v1.Image
	ri *rawImage
}

func (r *rawImageLayers) Layers() ([]v1.Layer, error) {
	out := make([]v1.Layer, len(r.ri.order))
	for i, d := range r.ri.order {
		out[i] = r.ri.layers[d]
	}
	return out, nil
}

func (r *rawImageLayers) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	if l, ok := r.ri.layers[h]; ok {
		return l, nil
	}
	return r.Image.LayerByDigest(h)
}

func (ri *rawImage) RawConfigFile() ([]byte, error)      { return ri.config, nil }
func (ri *rawImage) MediaType() (types.MediaType, error) { return ri.mt, nil }
func (ri *rawImage) RawManifest() ([]byte, error)        { return ri.manifest, nil }

func (ri *rawImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := ri.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("layer %s: not part of image", h)
}

// isUncompressed reports whether a layer media type is a plain tar.
func isUncompressed(mt types.MediaType) bool {
	switch mt {
	case types.OCIUncompressedLayer, types.DockerUncompressedLayer, types.OCIUncompressedRestrictedLayer:
		return true
	}
	return false
}

// contextReader makes a stream fail once ctx is done.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
