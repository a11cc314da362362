package exporter

import (
	"bufio"
	"bytes"
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// readLegacy reads a docker-save archive through its manifest.json (the
// format of every engine before 25, and of `docker save` with the classic
// image store).
func readLegacy(ctx context.Context, ix *tarIndex) ([]Tagged, error) {
	var m tarball.Manifest
	if err := readJSON(ix, "manifest.json", &m); err != nil {
		return nil, err
	}
	var set tagSet
	for i, d := range m {
		img, err := legacyImage(ctx, ix, d)
		if err != nil {
			return nil, fmt.Errorf("manifest.json entry %d: %w", i, err)
		}
		digest, err := img.Digest()
		if err != nil {
			return nil, err
		}
		set.add(digest, img, "")
		for _, tag := range d.RepoTags {
			if _, err := parseTag(tag); err != nil {
				return nil, fmt.Errorf("manifest.json entry %d: %w", i, err)
			}
			set.add(digest, img, tag)
		}
	}
	return set.list(), nil
}

func legacyImage(ctx context.Context, ix *tarIndex, d tarball.Descriptor) (v1.Image, error) {
	rawCfg, err := ix.readAll(d.Config, maxJSONSize)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", d.Config, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(d.Layers) {
		return nil, fmt.Errorf("config %s lists %d diff_ids but the manifest has %d layers", d.Config, len(cfg.RootFS.DiffIDs), len(d.Layers))
	}
	layers := make([]v1.Layer, len(d.Layers))
	for i, name := range d.Layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if layers[i], err = legacyLayer(ix, name, cfg.RootFS.DiffIDs[i]); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return imageFromParts(rawCfg, types.OCIConfigJSON, layers)
}

// legacyLayer hashes a layer member once to learn its digest and media
// type; an uncompressed layer must hash to its diffID.
func legacyLayer(ix *tarIndex, name string, diffID v1.Hash) (v1.Layer, error) {
	rc, size, err := ix.open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	magic, _ := br.Peek(4)
	mt := types.OCIUncompressedLayer
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		mt = types.OCILayer
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		mt = types.OCILayerZStd
	}
	digest, _, err := v1.SHA256(br)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if mt == types.OCIUncompressedLayer && digest != diffID {
		return nil, fmt.Errorf("%s: content %s does not match diff_id %s", name, digest, diffID)
	}
	desc := v1.Descriptor{MediaType: mt, Digest: digest, Size: size}
	return &archiveLayer{ix: ix, name: name, desc: desc, diffID: diffID}, nil
}
