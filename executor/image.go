package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"

	"github.com/builder-dev/builder/exporter"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// finalImage turns the target stage's state into an image: the config with
// its rootfs and labels, and a manifest over the stage's layers.
func (b *build) finalImage(s *stageState) (v1.Image, error) {
	img := s.img
	img.RootFS.Type = "layers"
	img.RootFS.DiffIDs = nil
	for _, l := range s.layers {
		d, err := digest.Parse(l.diffID)
		if err != nil {
			return nil, fmt.Errorf("layer diffID %q: %w", l.diffID, err)
		}
		img.RootFS.DiffIDs = append(img.RootFS.DiffIDs, d)
	}
	if len(b.e.opts.Labels) > 0 {
		labels := maps.Clone(img.Config.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, b.e.opts.Labels)
		img.Config.Labels = labels
	}
	created := s.created
	if b.e.opts.SourceDateEpoch != nil {
		created = *b.e.opts.SourceDateEpoch
	}
	if !created.IsZero() {
		img.Created = &created
	}
	raw, err := json.Marshal(img)
	if err != nil {
		return nil, err
	}
	layers := make([]v1.Layer, len(s.layers))
	for i, l := range s.layers {
		layers[i] = l.layer
	}
	return NewImage(raw, layers)
}

// NewImage assembles an OCI image from a raw config and its layers, in
// order. The manifest refers to each layer by its own digest and media
// type: uncompressed for layers built here, as stored for base layers.
func NewImage(rawConfig []byte, layers []v1.Layer) (v1.Image, error) {
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config: v1.Descriptor{
			MediaType: types.OCIConfigJSON,
			Size:      int64(len(rawConfig)),
		},
	}
	h, _, err := v1.SHA256(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, err
	}
	m.Config.Digest = h
	byDigest := map[v1.Hash]v1.Layer{}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, fmt.Errorf("layer digest: %w", err)
		}
		size, err := l.Size()
		if err != nil {
			return nil, fmt.Errorf("layer %s size: %w", d, err)
		}
		mt, err := l.MediaType()
		if err != nil {
			return nil, fmt.Errorf("layer %s media type: %w", d, err)
		}
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: ociLayerType(mt), Size: size, Digest: d})
		byDigest[d] = l
	}
	rawManifest, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return partial.CompressedToImage(&rawImage{config: rawConfig, manifest: rawManifest, layers: byDigest})
}

// ociLayerType maps Docker layer media types onto their OCI equivalents so
// the manifest is consistently OCI.
func ociLayerType(mt types.MediaType) types.MediaType {
	switch mt {
	case types.DockerLayer:
		return types.OCILayer
	case types.DockerUncompressedLayer:
		return types.OCIUncompressedLayer
	}
	return mt
}

type rawImage struct {
	config, manifest []byte
	layers           map[v1.Hash]v1.Layer
}

func (i *rawImage) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *rawImage) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (i *rawImage) RawManifest() ([]byte, error)        { return i.manifest, nil }

func (i *rawImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("image has no layer %s", h)
}

// storeLayer is a layer built here, read back from the layer store.
// Its bytes are produced when the image is exported, after Run returned, so
// it is not bound to the build's context.
func (b *build) storeLayer(diffID string, size int64) (v1.Layer, error) {
	return exporter.LayerFromStore(context.Background(), b.e.opts.Layers, diffID, size)
}
