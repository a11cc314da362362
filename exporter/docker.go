package exporter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotation keys Docker 25+ and containerd put on index.json entries.
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
	annotationCreated   = "org.opencontainers.image.created"
)

// dockerManifestEntry is one element of a docker-save manifest.json.
type dockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// WriteDocker writes images to path as `docker save` of Docker 25+ does:
// manifest.json, repositories, oci-layout, index.json and blobs/sha256/
// holding manifests, configs and uncompressed layers (each once). The tar is
// deterministic and replaces path atomically. An image of several
// platforms is an image index in index.json (what Docker 25+ loads) and
// its Image alone in manifest.json (what an older engine loads).
func WriteDocker(ctx context.Context, path string, images []Tagged) error {
	a := &dockerArchive{blobs: blobSet{}, repos: map[string]map[string]string{}}
	return writeImages(ctx, path, "docker", a, images)
}

// archive collects images into one tar: add may write entries into the
// archive already (an OCI archive's compressed layers), write adds the
// rest.
type archive interface {
	add(d *detTar, t Tagged) error
	write(d *detTar) error
}

// writeImages adds images to a and writes it to path atomically; kind
// names the format in errors.
func writeImages(ctx context.Context, path, kind string, a archive, images []Tagged) error {
	var addErr error
	err := writeAtomic(ctx, path, func(d *detTar) error {
		for i, t := range images {
			if err := a.add(d, t); err != nil {
				addErr = fmt.Errorf("write %s archive %s: image %d: %w", kind, path, i, err)
				return addErr
			}
		}
		return a.write(d)
	})
	switch {
	case addErr != nil:
		return addErr
	case err != nil:
		return fmt.Errorf("write %s archive %s: %w", kind, path, err)
	}
	return nil
}

type dockerArchive struct {
	blobs     blobSet
	manifests []dockerManifestEntry
	index     []v1.Descriptor
	repos     map[string]map[string]string
}

func (a *dockerArchive) add(_ *detTar, t Tagged) error {
	names, err := parseTags(t.Tags)
	if err != nil {
		return err
	}
	img, err := uncompressedImage(t.Image)
	if err != nil {
		return err
	}
	desc, err := addImageBlobs(a.blobs, img)
	if err != nil {
		return err
	}
	if len(t.Platforms) > 0 {
		// Docker 25+ loads the index of index.json; manifest.json names
		// the one image an engine with one image per name takes.
		if desc, err = a.addIndex(t); err != nil {
			return err
		}
	}
	m, err := img.Manifest()
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	entry := dockerManifestEntry{Config: "blobs/sha256/" + m.Config.Digest.Hex, RepoTags: []string{}}
	for _, l := range m.Layers {
		entry.Layers = append(entry.Layers, "blobs/sha256/"+l.Digest.Hex)
	}
	for _, n := range names {
		entry.RepoTags = append(entry.RepoTags, n.Familiar())
		if len(m.Layers) > 0 {
			a.addRepo(n, m.Layers[len(m.Layers)-1].Digest.Hex)
		}
	}
	a.index = append(a.index, indexEntries(desc, t, names)...)
	a.manifests = append(a.manifests, entry)
	return nil
}

// addIndex adds the image index of t's platform images, uncompressed, and
// returns its descriptor.
func (a *dockerArchive) addIndex(t Tagged) (v1.Descriptor, error) {
	imgs := make([]AttestedImage, len(t.Platforms))
	for i, p := range t.Platforms {
		img, err := uncompressedImage(p)
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("platform image %d: %w", i, err)
		}
		imgs[i] = AttestedImage{Image: img}
	}
	idx, err := AttestedIndex(imgs)
	if err != nil {
		return v1.Descriptor{}, err
	}
	return addIndexBlobs(a.blobs, idx)
}

func (a *dockerArchive) addRepo(n imageName, top string) {
	if a.repos[n.Repo()] == nil {
		a.repos[n.Repo()] = map[string]string{}
	}
	a.repos[n.Repo()][n.Tag()] = top
}

// indexEntries are index.json's entries for t's image (or index) desc:
// one per tag, annotated with its name, or desc itself when t has none;
// each with t's creation time when it has one, and t's platform when desc
// is an image.
func indexEntries(desc v1.Descriptor, t Tagged, names []imageName) []v1.Descriptor {
	if desc.MediaType.IsImage() && t.Platform != nil {
		desc.Platform = t.Platform
	}
	entry := func(a map[string]string) v1.Descriptor {
		d := desc
		if !t.Created.IsZero() {
			if a == nil {
				a = map[string]string{}
			}
			a[annotationCreated] = t.Created.UTC().Format(time.RFC3339)
		}
		d.Annotations = a
		return d
	}
	if len(names) == 0 {
		return []v1.Descriptor{entry(maps.Clone(desc.Annotations))}
	}
	out := make([]v1.Descriptor, len(names))
	for i, n := range names {
		out[i] = entry(map[string]string{annotationImageName: n.Full(), annotationRefName: n.Tag()})
	}
	return out
}

func (a *dockerArchive) write(t *detTar) error {
	if err := t.blobs(a.blobs); err != nil {
		return err
	}
	files := []struct {
		name string
		v    any
	}{
		{"index.json", indexOf(a.index)},
		{"manifest.json", a.manifests},
		{"oci-layout", ociLayout()},
		{"repositories", a.repos},
	}
	for _, f := range files {
		data, err := json.Marshal(f.v)
		if err != nil {
			return fmt.Errorf("encode %s: %w", f.name, err)
		}
		if err := t.file(f.name, data); err != nil {
			return err
		}
	}
	return nil
}

func indexOf(descs []v1.Descriptor) *v1.IndexManifest {
	if descs == nil {
		descs = []v1.Descriptor{}
	}
	return &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: descs}
}

func ociLayout() map[string]string { return map[string]string{"imageLayoutVersion": "1.0.0"} }

// addImageBlobs adds the manifest, config and layers of img to set and
// returns the manifest's descriptor.
func addImageBlobs(set blobSet, img v1.Image) (v1.Descriptor, error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("manifest: %w", err)
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("config: %w", err)
	}
	desc, err := partial.Descriptor(img)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("descriptor: %w", err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("config digest: %w", err)
	}
	set.addBytes(desc.Digest.Hex, rawManifest)
	set.addBytes(cfgName.Hex, rawCfg)
	layers, err := img.Layers()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("layers: %w", err)
	}
	for i, l := range layers {
		d, err := layerDescriptor(l)
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("layer %d: %w", i, err)
		}
		b := blobEntry{hex: d.Digest.Hex, size: d.Size, open: l.Compressed}
		if dt, ok := l.(directTar); ok && isUncompressed(d.MediaType) {
			b.writeTo = dt.tarTo()
		}
		set.add(b)
	}
	return v1.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}, nil
}

// uncompressedImage returns img itself when its manifest is OCI and all its
// layers are plain tars, and otherwise an equivalent OCI image whose layers
// are the uncompressed tars (same config, same diffIDs).
func uncompressedImage(img v1.Image) (v1.Image, error) {
	mt, err := img.MediaType()
	if err != nil {
		return nil, fmt.Errorf("media type: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("layers: %w", err)
	}
	converted := make([]v1.Layer, len(layers))
	same := mt == types.OCIManifestSchema1
	for i, l := range layers {
		if converted[i], err = uncompressedLayer(l); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		same = same && converted[i] == l
	}
	if same {
		return img, nil
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return rebuilt(img, rawCfg, types.OCIConfigJSON, converted)
}

// uncompressedLayer returns l when it is a plain tar, and otherwise a view
// of its uncompressed stream, measured (and its diffID checked) by reading
// it once.
func uncompressedLayer(l v1.Layer) (v1.Layer, error) {
	mt, err := l.MediaType()
	if err != nil {
		return nil, fmt.Errorf("media type: %w", err)
	}
	if isUncompressed(mt) {
		return l, nil
	}
	diffID, err := l.DiffID()
	if err != nil {
		return nil, fmt.Errorf("diffID: %w", err)
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, fmt.Errorf("uncompress: %w", err)
	}
	defer rc.Close()
	got, size, err := v1.SHA256(rc)
	if err != nil {
		return nil, fmt.Errorf("uncompress: %w", err)
	}
	if got != diffID {
		return nil, fmt.Errorf("uncompressed digest %s does not match diffID %s", got, diffID)
	}
	return &plainLayer{l: l, diffID: diffID, size: size}, nil
}

// plainLayer is the uncompressed form of a compressed layer.
type plainLayer struct {
	l      v1.Layer
	diffID v1.Hash
	size   int64
}

func (p *plainLayer) DiffID() (v1.Hash, error)             { return p.diffID, nil }
func (p *plainLayer) Digest() (v1.Hash, error)             { return p.diffID, nil }
func (p *plainLayer) Size() (int64, error)                 { return p.size, nil }
func (p *plainLayer) MediaType() (types.MediaType, error)  { return types.OCIUncompressedLayer, nil }
func (p *plainLayer) Uncompressed() (io.ReadCloser, error) { return p.l.Uncompressed() }
func (p *plainLayer) Compressed() (io.ReadCloser, error)   { return p.l.Uncompressed() }
