package exporter

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/builder-dev/builder/cache"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// InlineCacheKey is the image config field that holds builder's inline
// cache (--cache-to type=inline): the records of the image's own steps,
// each naming its layer by diffID, so that --cache-from IMAGE reuses the
// image's layers. BuildKit's inline cache is another field (buildkitInline),
// with keys builder cannot use.
const InlineCacheKey = "builder.cache.v1"

const buildkitInline = "moby.buildkit.cache.v0"

// ErrForeignCache is a --cache-from that is not a builder cache: another
// tool's cache, or an image without inline cache.
var ErrForeignCache = errors.New("not a builder cache")

// InlineCache returns img with recs (the records of its steps) in its
// config under InlineCacheKey. Records whose layer is not one of img's are
// left out.
func InlineCache(img v1.Image, recs []*cache.Record) (v1.Image, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	own := map[string]bool{}
	for _, d := range cfg.RootFS.DiffIDs {
		own[d.String()] = true
	}
	cc := cacheConfig{Version: cacheVersion}
	for _, r := range recs {
		if !r.EmptyLayer && !own[r.DiffID] {
			continue
		}
		cc.Records = append(cc.Records, cacheRecord{Key: r.Key, DiffID: r.DiffID, Size: r.Size, EmptyLayer: r.EmptyLayer,
			CreatedBy: r.CreatedBy, Comment: r.Comment, Created: r.Created, RunMS: r.RunMS, ContentKey: r.ContentKey})
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	if m[InlineCacheKey], err = json.Marshal(cc); err != nil {
		return nil, err
	}
	if raw, err = json.Marshal(m); err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	return rebuilt(img, raw, types.OCIConfigJSON, layers)
}

// indexInline reads the inline cache of an image (InlineCache): its
// records, and its layers by the records' diffIDs.
func (c *ImportedCache) indexInline(img v1.Image, m *v1.Manifest) error {
	raw, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}
	inline, ok := fields[InlineCacheKey]
	switch {
	case !ok && fields[buildkitInline] != nil:
		return fmt.Errorf("%w: the image holds BuildKit's inline cache, whose keys builder cannot use", ErrForeignCache)
	case !ok:
		return fmt.Errorf("%w: an image without inline cache (build it with --cache-to type=inline)", ErrForeignCache)
	}
	var cc cacheConfig
	if err := json.Unmarshal(inline, &cc); err != nil {
		return fmt.Errorf("decode inline cache: %w", err)
	}
	if cc.Version != cacheVersion {
		return fmt.Errorf("inline cache version %q, want %q", cc.Version, cacheVersion)
	}
	var cfg struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil || len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return fmt.Errorf("config lists %d layers, the manifest %d", len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	byDiffID := map[string]v1.Descriptor{}
	for i, d := range m.Layers {
		byDiffID[cfg.RootFS.DiffIDs[i]] = d
	}
	c.init()
	for _, r := range cc.Records {
		if !r.EmptyLayer {
			d, ok := byDiffID[r.DiffID]
			if !ok {
				return fmt.Errorf("inline record %s: layer %s is not the image's", r.Key, r.DiffID)
			}
			r.Layer = d.Digest.String()
			c.layers[r.Layer] = d
		}
		c.records[r.Key] = r
	}
	return nil
}
