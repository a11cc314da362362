package exporter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// maxIndexDepth bounds nested image indexes.
const maxIndexDepth = 8

// ReadArchive reads the images of a docker-save tar (any engine version:
// manifest.json alone, or with the index.json of Docker 25+) or of an OCI
// image layout tar. From a multi-platform index it picks the host platform,
// else linux/amd64. Content is checked against its digests as it is read;
// members escaping the archive, link cycles, and configs whose diff_ids do
// not pair with the layers are errors.
func ReadArchive(ctx context.Context, path string) ([]Tagged, error) {
	ix, err := indexTar(path)
	if err != nil {
		return nil, fmt.Errorf("read archive %s: %w", path, err)
	}
	var out []Tagged
	switch {
	case ix.has("index.json"):
		out, err = readLayout(ctx, ix)
	case ix.has("manifest.json"):
		out, err = readLegacy(ctx, ix)
	default:
		err = errors.New("neither index.json nor manifest.json found: not an image archive")
	}
	if err != nil {
		return nil, fmt.Errorf("read archive %s: %w", path, err)
	}
	return out, nil
}

// readJSON decodes the archive member name into v.
func readJSON(ix *tarIndex, name string, v any) error {
	data, err := ix.readAll(name, maxJSONSize)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w", name, err)
	}
	return nil
}

// tagSet accumulates images in order, merging the tags of equal digests.
type tagSet struct {
	order []v1.Hash
	byKey map[v1.Hash]*Tagged
}

func (s *tagSet) add(key v1.Hash, img v1.Image, tag string) {
	if s.byKey == nil {
		s.byKey = map[v1.Hash]*Tagged{}
	}
	t, ok := s.byKey[key]
	if !ok {
		t = &Tagged{Image: img}
		s.byKey[key] = t
		s.order = append(s.order, key)
	}
	if tag != "" {
		t.Tags = append(t.Tags, tag)
	}
}

func (s *tagSet) list() []Tagged {
	out := make([]Tagged, 0, len(s.order))
	for _, k := range s.order {
		out = append(out, *s.byKey[k])
	}
	return out
}

// readLayout reads index.json and the blobs it names.
func readLayout(ctx context.Context, ix *tarIndex) ([]Tagged, error) {
	var idx v1.IndexManifest
	if err := readJSON(ix, "index.json", &idx); err != nil {
		return nil, err
	}
	var set tagSet
	for i, d := range idx.Manifests {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		img, err := layoutImage(ctx, ix, d, map[v1.Hash]bool{})
		if err != nil {
			return nil, fmt.Errorf("index.json manifest %d: %w", i, err)
		}
		digest, err := img.Digest()
		if err != nil {
			return nil, err
		}
		set.add(digest, img, tagFromAnnotations(d.Annotations))
	}
	return set.list(), nil
}

// tagFromAnnotations returns the image name an index entry carries, or "".
func tagFromAnnotations(a map[string]string) string {
	if n := a[annotationImageName]; n != "" {
		return n
	}
	if n := a[annotationRefName]; strings.ContainsAny(n, ":/") {
		if _, err := parseTag(n); err == nil {
			return n
		}
	}
	return ""
}

// layoutImage resolves d to an image, descending into nested indexes.
func layoutImage(ctx context.Context, ix *tarIndex, d v1.Descriptor, seen map[v1.Hash]bool) (v1.Image, error) {
	if seen[d.Digest] {
		return nil, fmt.Errorf("index cycle at %s", d.Digest)
	}
	if len(seen) >= maxIndexDepth {
		return nil, fmt.Errorf("indexes nested deeper than %d", maxIndexDepth)
	}
	seen[d.Digest] = true
	raw, err := readBlob(ix, d, maxJSONSize)
	if err != nil {
		return nil, err
	}
	switch {
	case d.MediaType.IsIndex():
		var idx v1.IndexManifest
		if err := json.Unmarshal(raw, &idx); err != nil {
			return nil, fmt.Errorf("decode index %s: %w", d.Digest, err)
		}
		child, err := pickPlatform(idx.Manifests)
		if err != nil {
			return nil, fmt.Errorf("index %s: %w", d.Digest, err)
		}
		return layoutImage(ctx, ix, child, seen)
	case d.MediaType.IsImage():
		return layoutManifest(ctx, ix, raw)
	}
	return nil, fmt.Errorf("%s: unsupported media type %q", d.Digest, d.MediaType)
}

// pickPlatform chooses the host platform's image, else linux/amd64.
func pickPlatform(descs []v1.Descriptor) (v1.Descriptor, error) {
	wants := []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}, {OS: "linux", Architecture: "amd64"}}
	for _, want := range wants {
		for _, d := range descs {
			if d.Platform != nil && d.Platform.OS == want.OS && d.Platform.Architecture == want.Architecture {
				return d, nil
			}
		}
	}
	if len(descs) == 1 && descs[0].Platform == nil {
		return descs[0], nil
	}
	return v1.Descriptor{}, fmt.Errorf("no image for linux/%s or linux/amd64", runtime.GOARCH)
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// readBlob reads and verifies a small blob.
func readBlob(ix *tarIndex, d v1.Descriptor, limit int64) ([]byte, error) {
	if d.Size > limit {
		return nil, fmt.Errorf("%s: %d bytes exceeds the limit of %d", d.Digest, d.Size, limit)
	}
	rc, _, err := ix.open(blobPath(d.Digest))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(newVerifyReader(rc, d.Digest, d.Size, blobPath(d.Digest)))
}

// layoutManifest builds the image of a manifest read from the archive.
func layoutManifest(ctx context.Context, ix *tarIndex, rawManifest []byte) (v1.Image, error) {
	var m v1.Manifest
	if err := json.Unmarshal(rawManifest, &m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	rawCfg, err := readBlob(ix, m.Config, maxJSONSize)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := v1.ParseConfigFile(strings.NewReader(string(rawCfg)))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("config %s lists %d diff_ids but the manifest has %d layers", m.Config.Digest, len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	layers := make([]v1.Layer, len(m.Layers))
	for i, d := range m.Layers {
		if _, err := ix.resolve(blobPath(d.Digest)); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if isUncompressed(d.MediaType) && d.Digest != cfg.RootFS.DiffIDs[i] {
			return nil, fmt.Errorf("layer %d: uncompressed digest %s does not match diff_id %s", i, d.Digest, cfg.RootFS.DiffIDs[i])
		}
		layers[i] = &archiveLayer{ix: ix, name: blobPath(d.Digest), desc: d, diffID: cfg.RootFS.DiffIDs[i]}
	}
	return newRawImage(rawManifest, rawCfg, layers)
}

// archiveLayer is a layer stored as one member of an archive.
type archiveLayer struct {
	ix     *tarIndex
	name   string
	desc   v1.Descriptor
	diffID v1.Hash
}

func (l *archiveLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *archiveLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *archiveLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *archiveLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }

func (l *archiveLayer) Compressed() (io.ReadCloser, error) {
	rc, _, err := l.ix.open(l.name)
	if err != nil {
		return nil, err
	}
	return newVerifyReader(rc, l.desc.Digest, l.desc.Size, l.name), nil
}

func (l *archiveLayer) Uncompressed() (io.ReadCloser, error) {
	if isUncompressed(l.desc.MediaType) {
		return l.Compressed()
	}
	cl, err := partial.CompressedToLayer(compressedOnly{l})
	if err != nil {
		return nil, err
	}
	rc, err := cl.Uncompressed()
	if err != nil {
		return nil, err
	}
	return newVerifyReader(rc, l.diffID, -1, l.name+" (uncompressed)"), nil
}

// compressedOnly hides archiveLayer's Uncompressed from partial.
type compressedOnly struct{ l *archiveLayer }

func (c compressedOnly) Digest() (v1.Hash, error)            { return c.l.Digest() }
func (c compressedOnly) Size() (int64, error)                { return c.l.Size() }
func (c compressedOnly) MediaType() (types.MediaType, error) { return c.l.MediaType() }
func (c compressedOnly) Compressed() (io.ReadCloser, error)  { return c.l.Compressed() }
