package main

import (
	"encoding/json"

	"github.com/builder-dev/builder/cache"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// metadataStep is one Dockerfile instruction in the --metadata-file output.
type metadataStep struct {
	Stage       string `json:"stage"`
	Line        int    `json:"line"`
	Instruction string `json:"instruction"`
	Name        string `json:"name"` // as progress shows it: "[base 2/3] RUN make"
	Cache       string `json:"cache"`
	Reason      string `json:"reason"`
	Key         string `json:"key"`
	DurationMS  int64  `json:"duration_ms"`
	Layer       string `json:"layer"`
	Size        int64  `json:"size"`     // the layer's uncompressed bytes
	SavedMS     int64  `json:"saved_ms"` // a hit: the step's recorded run time
}

// writeMetadata writes the --metadata-file JSON for CI: digests, tags and
// one entry per instruction of the stages built, in order. Metadata-only
// instructions have an empty key and layer.
func writeMetadata(path string, img v1.Image, digest v1.Hash, tags []string, rec *cache.BuildRecord) error {
	cfgDigest, err := img.ConfigName()
	if err != nil {
		return err
	}
	steps := make([]metadataStep, 0, len(rec.Steps))
	for _, s := range rec.Steps {
		ms := metadataStep{Stage: s.Stage, Line: s.Line, Instruction: s.Instruction, Name: s.Name, Cache: s.Cache,
			Reason: s.Reason, DurationMS: s.DurationMS, Layer: s.Layer, Size: s.Size, SavedMS: s.SavedMS}
		if !s.Key.IsZero() {
			ms.Key = s.Key.String()
		}
		steps = append(steps, ms)
	}
	if tags == nil {
		tags = []string{}
	}
	out := map[string]any{
		"image.digest":  digest.String(),
		"config.digest": cfgDigest.String(),
		"tags":          tags,
		"steps":         steps,
		"cache":         cacheMetadataOf(rec),
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}
