package main

import (
	"encoding/json"
	"strings"

	"github.com/builder-dev/builder/cache"
	"github.com/distribution/reference"
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

// writeMetadata writes the --metadata-file JSON for CI: buildx's keys
// (containerimage.digest and .descriptor: the manifest where the image
// went, see exported.manifest; containerimage.config.digest; image.name,
// the names (imageNames); buildx.build.ref), then builder's own: the local store's digest (of a
// multi-platform build: the index's, with each platform's image under
// "platforms"), tags,
// one entry per instruction of the stages built, in order (metadata-only
// instructions have an empty key and layer), and the cache report.
func writeMetadata(path string, img v1.Image, out exported, tags, names []string, rec *cache.BuildRecord) error {
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
	m := map[string]any{
		"containerimage.digest":        out.manifest().Digest.String(),
		"containerimage.descriptor":    out.manifest(),
		"containerimage.config.digest": cfgDigest.String(),
		"buildx.build.ref":             "builder/local/" + rec.ID,
		"image.digest":                 out.local.String(),
		"config.digest":                cfgDigest.String(),
		"tags":                         tags,
		"steps":                        steps,
		"cache":                        cacheMetadataOf(rec),
	}
	if len(names) > 0 {
		m["image.name"] = strings.Join(fullNames(names), ",")
	}
	if len(out.platforms) > 0 {
		m["platforms"] = out.platforms
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// fullNames are tags as buildx's image.name gives them: fully qualified
// (docker.io/library/app:v1).
func fullNames(tags []string) []string {
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		if r, err := reference.ParseNormalizedNamed(t); err == nil {
			out = append(out, reference.TagNameOnly(r).String())
		} else {
			out = append(out, t)
		}
	}
	return out
}
