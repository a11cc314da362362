package executor

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	cplatforms "github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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
	hist := img.History
	if b.e.opts.SourceDateEpoch == nil {
		hist = datedByLayers(hist, s.hist, s.layers)
	}
	img.History = fillHistoryTimes(historyForLayers(hist, s.layers, b.e.opts.SourceDateEpoch))
	// BuildKit's exporter dates the image by its last history entry with
	// a time: under SOURCE_DATE_EPOCH a FROM-only image keeps its base's.
	for _, h := range img.History {
		if h.Created != nil {
			created = *h.Created
		}
	}
	if p := b.e.opts.TargetPlatform; p != nil {
		setPlatform(&img, *p)
	}
	if !created.IsZero() {
		img.Created = &created
	}
	raw, err := marshalConfig(img)
	if err != nil {
		return nil, err
	}
	layers := make([]v1.Layer, len(s.layers))
	for i, l := range s.layers {
		layers[i] = l.layer
	}
	return b.e.opts.Images.NewImage(raw, layers)
}

// marshalConfig encodes an image config as BuildKit's image writer does:
// its top-level members in name order (BuildKit patches every config
// through a map), each member as its type encodes it.
func marshalConfig(img dockerspec.DockerOCIImage) ([]byte, error) {
	raw, err := json.Marshal(img)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// datedByLayers dates history entries as BuildKit's image exporter does:
// the n-th entry with a layer, if the build made it (refs[i].stage >= 0,
// its frontend gives them no time) or it has no time, takes the time of
// the image's n-th layer. That is the entry's own layer, unless the base
// image's history lists fewer layers than it has: then a step's entry
// takes the time of a layer below its own, as in BuildKit.
func datedByLayers(hist []ocispec.History, refs []stepRef, layers []layerRef) []ocispec.History {
	out := slices.Clone(hist)
	n := 0
	for i, h := range out {
		if h.EmptyLayer {
			continue
		}
		if n < len(layers) && !layers[n].created.IsZero() && (h.Created == nil || i < len(refs) && refs[i].stage >= 0) {
			t := layers[n].created
			out[i].Created = &t
		}
		n++
	}
	return out
}

// historyForLayers gives history entries to the layers that have none
// (the files of a named local context), as BuildKit's image exporter does:
// for each layer missing an entry it appends, at the end, an entry
// describing one of the last layers — their snapshot descriptions, in
// order — with BuildKit's exporter comment.
func historyForLayers(hist []ocispec.History, layers []layerRef, epoch *time.Time) []ocispec.History {
	withLayer := 0
	for _, h := range hist {
		if !h.EmptyLayer {
			withLayer++
		}
	}
	if withLayer >= len(layers) {
		return hist
	}
	out := slices.Clone(hist)
	for _, l := range layers[withLayer:] {
		t := l.created
		if epoch != nil {
			t = *epoch
		}
		desc := l.desc
		if desc == "" {
			desc = "created by buildkit"
		}
		out = append(out, ocispec.History{Created: &t, CreatedBy: desc, Comment: "buildkit.exporter.image.v0"})
	}
	return out
}

// fillHistoryTimes returns hist with a time for every entry that has
// none, as BuildKit's image exporter gives them: the first entries without
// one take the time of the next entry that has one (a stage's metadata
// steps before its first layer take that layer's time, not the base
// image's), or else of the last one before them; later ones take the time
// of the entry before them. Entries stay without a time only when none has
// one (FROM scratch and metadata steps only).
func fillHistoryTimes(hist []ocispec.History) []ocispec.History {
	first := slices.IndexFunc(hist, func(h ocispec.History) bool { return h.Created == nil })
	if first < 0 {
		return hist
	}
	var fill *time.Time
	if next := slices.IndexFunc(hist[first:], func(h ocispec.History) bool { return h.Created != nil }); next >= 0 {
		fill = hist[first+next].Created
	} else {
		for _, h := range hist[:first] {
			if h.Created != nil {
				fill = h.Created
			}
		}
	}
	out := slices.Clone(hist)
	for i := first; i < len(out); i++ {
		switch {
		case out[i].Created != nil:
			fill = out[i].Created
		case fill != nil:
			t := *fill
			out[i].Created = &t
		}
	}
	return out
}

// setPlatform makes img an image for the explicit target platform p, as
// BuildKit does: its OS and architecture become p's; its variant and OS
// version too when p has them or the OS or architecture changed.
func setPlatform(img *dockerspec.DockerOCIImage, p v1.Platform) {
	same := img.OS == p.OS && img.Architecture == p.Architecture
	img.OS, img.Architecture = p.OS, p.Architecture
	if p.Variant != "" || !same {
		img.Variant = p.Variant
	}
	if p.OSVersion != "" || !same {
		img.OSVersion = p.OSVersion
	}
	if p.OSFeatures != nil {
		img.OSFeatures = slices.Clone(p.OSFeatures)
	}
	n := cplatforms.Normalize(ocispec.Platform{OS: img.OS, Architecture: img.Architecture, Variant: img.Variant})
	img.OS, img.Architecture, img.Variant = n.OS, n.Architecture, n.Variant
}
