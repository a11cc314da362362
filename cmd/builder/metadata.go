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
	Cache       string `json:"cache"`
	Reason      string `json:"reason,omitempty"`
	Key         string `json:"key,omitempty"`
	DurationMS  int64  `json:"duration_ms"`
	Layer       string `json:"layer,omitempty"`
}

// writeMetadata writes the --metadata-file JSON for CI: digests, tags and
// one entry per instruction of the stages built, in order. The keys
// "containerimage.*" are those docker buildx writes.
func writeMetadata(path string, img v1.Image, digest v1.Hash, tags []string, rec *cache.BuildRecord) error {
	cfgDigest, err := img.ConfigName()
	if err != nil {
		return err
	}
	steps := make([]metadataStep, 0, len(rec.Steps))
	for _, s := range rec.Steps {
		ms := metadataStep{Stage: s.Stage, Line: s.Line, Instruction: s.Instruction, Cache: s.Cache,
			Reason: s.Reason, DurationMS: s.DurationMS, Layer: s.Layer}
		if !s.Key.IsZero() {
			ms.Key = s.Key.String()
		}
		steps = append(steps, ms)
	}
	if tags == nil {
		tags = []string{}
	}
	out := map[string]any{
		"image.digest":                 digest.String(),
		"config.digest":                cfgDigest.String(),
		"containerimage.digest":        digest.String(),
		"containerimage.config.digest": cfgDigest.String(),
		"tags":                         tags,
		"build.id":                     rec.ID,
		"steps":                        steps,
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}
