package executor

import (
	"encoding/json"
	"fmt"
	"maps"

	v1 "github.com/google/go-containerregistry/pkg/v1"
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
	return b.e.opts.Images.NewImage(raw, layers)
}
