package exporter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/snapshot"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// A remote cache is one OCI image manifest in BuildKit's cache format:
// its config (media type CacheConfigType) is BuildKit's cache config — a
// list of layers (blob digest, parent index, media type, diffID, size,
// creation time) and a list of records (a key and the layers of its
// result) — and its layers are the records' layers, compressed, each once.
// It lives under a tag in a registry or under a name in the index.json of
// an OCI layout directory.
//
// Builder's keys are not BuildKit's, so a builder cache read by BuildKit
// matches nothing, and a BuildKit cache read by builder neither: the
// config's "builder" field marks a cache builder wrote (cacheVersion), and
// each record carries what builder's history needs in its own "builder"
// field, which BuildKit ignores. Each layer is a step's own diff, so every
// layer's parent is -1.

// CacheConfigType is the config media type of a cache manifest, BuildKit's.
const CacheConfigType types.MediaType = "application/vnd.buildkit.cacheconfig.v0"

// cacheVersion marks a cache builder wrote and tags its encoding. Keys
// carry their own version (cache.KeyOf), so a build with other key rules
// simply finds no match.
const cacheVersion = "builder.cache.v1"

// refNameAnnotation names a manifest in an OCI layout's index.json.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// CacheLocation is where a remote cache lives: an image reference in a
// registry, or a name in an OCI layout directory.
type CacheLocation struct {
	Ref string // registry reference (type=registry,ref=REF)
	Dir string // OCI layout directory (type=local)
	Tag string // the manifest's name in Dir's index.json; "" means "latest"
}

func (l CacheLocation) String() string {
	if l.Dir != "" {
		return l.Dir
	}
	return l.Ref
}

func (l CacheLocation) tag() string {
	if l.Tag == "" {
		return "latest"
	}
	return l.Tag
}

// cacheConfig is builder's list of records: the inline cache (inline.go)
// and, converted by wireConfig, the config of a cache manifest.
type cacheConfig struct {
	Version string        `json:"version"`
	Records []cacheRecord `json:"records"`
}

// cacheRecord is one step result. Layer is the digest of the compressed
// layer among the manifest's layers ("" for an empty layer).
type cacheRecord struct {
	Key        cache.Key `json:"key"`
	DiffID     string    `json:"diffID,omitempty"`
	Size       int64     `json:"size,omitempty"`
	Layer      string    `json:"layer,omitempty"`
	EmptyLayer bool      `json:"emptyLayer,omitempty"`
	CreatedBy  string    `json:"createdBy,omitempty"`
	Comment    string    `json:"comment,omitempty"`
	Created    time.Time `json:"created"`
	RunMS      int64     `json:"runMS,omitempty"` // how long the step ran: what a hit saves
	// ContentKey is the step's key by the files it read from another
	// stage (cache.Record.ContentKey).
	ContentKey cache.Key `json:"contentKey,omitzero"`
}

// wireConfig is BuildKit's cache config (its cacheimporttypes.CacheConfig)
// with builder's marker.
type wireConfig struct {
	Layers  []wireLayer  `json:"layers,omitempty"`
	Records []wireRecord `json:"records,omitempty"`
	Builder string       `json:"builder,omitempty"` // cacheVersion in a builder cache
}

type wireLayer struct {
	Blob        string          `json:"blob"`
	Parent      int             `json:"parent"` // -1: no parent
	Annotations wireAnnotations `json:"annotations"`
}

type wireAnnotations struct {
	MediaType string    `json:"mediaType,omitempty"`
	DiffID    string    `json:"diffID,omitempty"`
	Size      int64     `json:"size,omitempty"` // the blob's
	CreatedAt time.Time `json:"createdAt"`
}

type wireRecord struct {
	Digest  cache.Key    `json:"digest"`
	Results []wireResult `json:"layers,omitempty"`
	Builder *wireStep    `json:"builder,omitempty"`
}

type wireResult struct {
	Layer     int       `json:"layer"` // index into the config's layers
	CreatedAt time.Time `json:"createdAt"`
}

// wireStep is what builder keeps of a record beyond BuildKit's fields.
type wireStep struct {
	Size       int64     `json:"size,omitempty"` // the layer's, uncompressed
	EmptyLayer bool      `json:"emptyLayer,omitempty"`
	CreatedBy  string    `json:"createdBy,omitempty"`
	Comment    string    `json:"comment,omitempty"`
	RunMS      int64     `json:"runMS,omitempty"`
	Created    time.Time `json:"created"`
	ContentKey cache.Key `json:"contentKey,omitzero"`
}

// toWire encodes records whose layers are described by descs (by digest).
func toWire(recs []cacheRecord, descs map[string]v1.Descriptor) wireConfig {
	w := wireConfig{Builder: cacheVersion}
	index := map[string]int{}
	for _, r := range recs {
		wr := wireRecord{Digest: r.Key, Builder: &wireStep{Size: r.Size, EmptyLayer: r.EmptyLayer,
			CreatedBy: r.CreatedBy, Comment: r.Comment, RunMS: r.RunMS, Created: r.Created, ContentKey: r.ContentKey}}
		if r.Layer != "" {
			i, ok := index[r.Layer]
			if !ok {
				d := descs[r.Layer]
				i = len(w.Layers)
				index[r.Layer] = i
				w.Layers = append(w.Layers, wireLayer{Blob: r.Layer, Parent: -1, Annotations: wireAnnotations{
					MediaType: string(d.MediaType), DiffID: r.DiffID, Size: d.Size, CreatedAt: r.Created}})
			}
			wr.Results = []wireResult{{Layer: i, CreatedAt: r.Created}}
		}
		w.Records = append(w.Records, wr)
	}
	return w
}

// fromWire decodes a builder cache's config. A cache without builder's
// marker is another tool's: an error wrapping ErrForeignCache.
func fromWire(raw []byte) ([]cacheRecord, error) {
	var w wireConfig
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("decode cache config: %w", err)
	}
	switch w.Builder {
	case cacheVersion:
	case "":
		return nil, fmt.Errorf("%w: BuildKit's cache, whose keys builder cannot use", ErrForeignCache)
	default:
		return nil, fmt.Errorf("cache version %q, want %q", w.Builder, cacheVersion)
	}
	recs := make([]cacheRecord, 0, len(w.Records))
	for _, wr := range w.Records {
		if wr.Builder == nil {
			return nil, fmt.Errorf("record %s: no builder fields", wr.Digest)
		}
		r := cacheRecord{Key: wr.Digest, Size: wr.Builder.Size, EmptyLayer: wr.Builder.EmptyLayer,
			CreatedBy: wr.Builder.CreatedBy, Comment: wr.Builder.Comment, RunMS: wr.Builder.RunMS, Created: wr.Builder.Created,
			ContentKey: wr.Builder.ContentKey}
		switch len(wr.Results) {
		case 0:
			if !r.EmptyLayer {
				return nil, fmt.Errorf("record %s: no layer", wr.Digest)
			}
		case 1:
			i := wr.Results[0].Layer
			if i < 0 || i >= len(w.Layers) {
				return nil, fmt.Errorf("record %s: layer index %d out of range", wr.Digest, i)
			}
			l := w.Layers[i]
			if l.Parent != -1 {
				return nil, fmt.Errorf("record %s: layer %s has a parent; builder's layers have none", wr.Digest, l.Blob)
			}
			r.Layer, r.DiffID = l.Blob, l.Annotations.DiffID
		default:
			return nil, fmt.Errorf("record %s: %d results, want one", wr.Digest, len(wr.Results))
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// ExportCache writes recs, each with its layer gzipped (once per layer
// and machine, see Compressed), to loc as a cache manifest, replacing
// what loc named before. Blobs the destination has are not uploaded again.
// It returns the manifest digest.
//
// A compressed copy of a layer found damaged on the way was removed by the
// read: the export is tried once more, which compresses the layer again
// (and a partial copy of it written into an OCI layout is removed).
func (s *Store) ExportCache(ctx context.Context, recs []*cache.Record, loc CacheLocation, o RemoteOptions) (v1.Hash, error) {
	start := time.Now()
	defer func() { s.traffic.ExportNanos.Add(int64(time.Since(start))) }()
	d, err := s.exportCache(ctx, recs, loc, o)
	var ce *cache.CorruptBlobError
	if !errors.As(err, &ce) || !ce.Removed {
		return d, err
	}
	h, herr := v1.NewHash(ce.Digest)
	if herr != nil {
		return d, err
	}
	if loc.Dir != "" {
		os.Remove(filepath.Join(loc.Dir, blobPath(h)))
	}
	o.notify(fmt.Sprintf("the compressed copy %s of a layer was damaged and is removed; compressing the layer again", shortDigest(h)))
	return s.exportCache(ctx, recs, loc, o)
}

func (s *Store) exportCache(ctx context.Context, recs []*cache.Record, loc CacheLocation, o RemoteOptions) (v1.Hash, error) {
	img, err := s.cacheImage(ctx, recs, o.Compression, o.notify)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("export cache to %s: %w", loc, err)
	}
	if loc.Dir != "" {
		err = writeLayoutCache(loc, img)
	} else {
		err = s.pushCache(ctx, loc.Ref, img, o)
	}
	if err != nil {
		return v1.Hash{}, fmt.Errorf("export cache to %s: %w", loc, err)
	}
	return img.Digest()
}

// cacheImage builds the cache manifest of recs.
func (s *Store) cacheImage(ctx context.Context, recs []*cache.Record, c Compression, notify func(string)) (v1.Image, error) {
	var plain []v1.Layer
	for _, r := range recs {
		if r.EmptyLayer || r.DiffID == "" {
			continue
		}
		l, err := LayerFromStore(ctx, s, r.DiffID, r.Size)
		if err != nil {
			return nil, err
		}
		plain = append(plain, l)
	}
	gz, err := s.compressAll(ctx, plain, c, notify)
	if err != nil {
		return nil, err
	}
	var out []cacheRecord
	var layers []v1.Layer
	descs := map[string]v1.Descriptor{}
	for _, r := range recs {
		cr := cacheRecord{Key: r.Key, DiffID: r.DiffID, Size: r.Size, EmptyLayer: r.EmptyLayer,
			CreatedBy: r.CreatedBy, Comment: r.Comment, Created: r.Created, RunMS: r.RunMS, ContentKey: r.ContentKey}
		if !r.EmptyLayer && r.DiffID != "" {
			d, err := v1.NewHash(r.DiffID)
			if err != nil {
				return nil, fmt.Errorf("record %s: %w", r.Key, err)
			}
			l := gz[d]
			desc, err := layerDescriptor(l)
			if err != nil {
				return nil, fmt.Errorf("record %s: %w", r.Key, err)
			}
			cr.Layer = desc.Digest.String()
			if _, ok := descs[cr.Layer]; !ok {
				descs[cr.Layer] = desc
				layers = append(layers, announcedLayer{Layer: l, notify: notify, count: &s.traffic.ExportBytes})
			}
		}
		out = append(out, cr)
	}
	raw, err := json.Marshal(toWire(out, descs))
	if err != nil {
		return nil, fmt.Errorf("encode cache config: %w", err)
	}
	return imageFromParts(raw, CacheConfigType, layers)
}

// pushCache pushes the cache image to ref, mounting layers other
// repositories of the registry hold, and remembers where its layers are.
func (s *Store) pushCache(ctx context.Context, ref string, img v1.Image, o RemoteOptions) error {
	r, err := o.parse(ref)
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	out, err := imageFromParts(raw, CacheConfigType, s.mountable(layers, r.Context(), o))
	if err != nil {
		return err
	}
	if err := remote.Write(r, out, o.remote(ctx, r.Context().Registry, remote.WithJobs(pushJobs))...); err != nil {
		return classify(err)
	}
	s.rememberSources(ctx, r.Context(), layerDigests(out))
	return nil
}

// writeLayoutCache adds img to the OCI layout loc.Dir (created if
// missing) under loc's tag, replacing the manifest that tag named.
func writeLayoutCache(loc CacheLocation, img v1.Image) error {
	p, err := layout.FromPath(loc.Dir)
	if errors.Is(err, os.ErrNotExist) {
		p, err = layout.Write(loc.Dir, empty.Index)
	}
	if err != nil {
		return err
	}
	ann := map[string]string{refNameAnnotation: loc.tag()}
	if err := p.ReplaceImage(img, match.Annotation(refNameAnnotation, loc.tag()), layout.WithAnnotations(ann)); err != nil {
		return err
	}
	return layoutModes(loc.Dir, img)
}

// layoutModes gives the files of img in the layout dir the modes
// BuildKit's local cache has, under the process's umask: blobs 0444
// (go-containerregistry writes a blob whose digest it learns while
// writing it 0600, as its temporary file was), index.json and oci-layout
// 0666 (it writes them 0777). A layer blob an earlier export wrote, and
// another user owns, is left as it is.
func layoutModes(dir string, img v1.Image) error {
	mask := umask()
	chmod := func(p string, mode os.FileMode) error {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Perm() == mode&^mask {
			return nil
		}
		if err := os.Chmod(p, mode&^mask); err != nil && !errors.Is(err, os.ErrPermission) {
			return err
		}
		return nil
	}
	digests, err := imageBlobDigests(img)
	if err != nil {
		return err
	}
	for _, h := range digests {
		if err := chmod(filepath.Join(dir, blobPath(h)), 0o444); err != nil {
			return err
		}
	}
	for _, name := range []string{"index.json", "oci-layout"} {
		if err := chmod(filepath.Join(dir, name), 0o666); err != nil {
			return err
		}
	}
	return nil
}

// imageBlobDigests lists the digests of img's manifest, config and
// layers.
func imageBlobDigests(img v1.Image) ([]v1.Hash, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	out := []v1.Hash{d, m.Config.Digest}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out, nil
}

// umask is the process's file mode creation mask (0o022 when
// /proc/self/status does not say).
func umask() os.FileMode {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o022
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return os.FileMode(m) & os.ModePerm
			}
		}
	}
	return 0o022
}

// ImportedCache is a remote cache whose manifest was read: it answers
// which keys it holds and fetches their layers on demand. It is safe for
// concurrent use.
type ImportedCache struct {
	s       *Store
	loc     CacheLocation
	repo    *name.Repository // the registry repository of a remote cache
	records map[cache.Key]cacheRecord
	layers  map[string]v1.Descriptor // by digest
	blobs   func(ctx context.Context, d v1.Hash) (io.ReadCloser, error)
}

// ImportCache reads the cache manifest at loc. A missing manifest (a
// cache never exported) is an error wrapping ErrImageNotFound.
func (s *Store) ImportCache(ctx context.Context, loc CacheLocation, o RemoteOptions) (*ImportedCache, error) {
	start := time.Now()
	defer func() { s.traffic.ImportNanos.Add(int64(time.Since(start))) }()
	c := &ImportedCache{s: s, loc: loc}
	var imgs []v1.Image
	var err error
	if loc.Dir != "" {
		var img v1.Image
		img, c.blobs, err = layoutCache(loc)
		imgs = []v1.Image{img}
	} else {
		imgs, c.blobs, err = remoteCache(ctx, loc.Ref, o)
	}
	for i := 0; err == nil && i < len(imgs); i++ {
		err = c.index(imgs[i])
	}
	if err != nil {
		return nil, fmt.Errorf("import cache from %s: %w", loc, err)
	}
	for _, img := range imgs {
		if m, err := img.RawManifest(); err == nil {
			s.traffic.ImportBytes.Add(int64(len(m)))
		}
		if cfg, err := img.RawConfigFile(); err == nil {
			s.traffic.ImportBytes.Add(int64(len(cfg)))
		}
	}
	if loc.Dir == "" {
		if r, err := o.parse(loc.Ref); err == nil {
			repo := r.Context()
			c.repo = &repo
			// A push to this registry mounts the cache's layers.
			for _, img := range imgs {
				s.rememberSources(ctx, repo, layerDigests(img))
			}
		}
	}
	return c, nil
}

func layoutCache(loc CacheLocation) (v1.Image, func(context.Context, v1.Hash) (io.ReadCloser, error), error) {
	p, err := layout.FromPath(loc.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w: no OCI layout at %s", ErrImageNotFound, loc.Dir)
	}
	if err != nil {
		return nil, nil, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, err
	}
	for _, d := range m.Manifests {
		if d.Annotations[refNameAnnotation] == loc.tag() {
			img, err := p.Image(d.Digest)
			blobs := func(_ context.Context, h v1.Hash) (io.ReadCloser, error) { return p.Blob(h) }
			return img, blobs, err
		}
	}
	return nil, nil, fmt.Errorf("%w: %s has no manifest named %q", ErrImageNotFound, loc.Dir, loc.tag())
}

// remoteCache reads the cache image at ref: a cache manifest, an image
// with inline cache, or an image index of such images (a multi-platform
// build's --cache-to type=inline), every platform's image.
func remoteCache(ctx context.Context, ref string, o RemoteOptions) ([]v1.Image, func(context.Context, v1.Hash) (io.ReadCloser, error), error) {
	r, err := o.parse(ref)
	if err != nil {
		return nil, nil, err
	}
	desc, err := remote.Get(r, o.remote(ctx, r.Context().Registry)...)
	if err != nil {
		return nil, nil, classify(err)
	}
	var imgs []v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err == nil {
			imgs, err = platformImages(idx)
		}
		if err != nil {
			return nil, nil, classify(err)
		}
	} else {
		img, err := desc.Image()
		if err != nil {
			return nil, nil, classify(err)
		}
		imgs = []v1.Image{img}
	}
	repo := r.Context()
	blobs := func(ctx context.Context, h v1.Hash) (io.ReadCloser, error) {
		l, err := remote.Layer(repo.Digest(h.String()), o.remote(ctx, repo.Registry)...)
		if err != nil {
			return nil, classify(err)
		}
		return l.Compressed()
	}
	return imgs, blobs, nil
}

// platformImages are the images of an index, its attestation manifests
// (platform unknown/unknown) left out.
func platformImages(idx v1.ImageIndex) ([]v1.Image, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var imgs []v1.Image
	for _, d := range m.Manifests {
		if !d.MediaType.IsImage() || (d.Platform != nil && d.Platform.OS == "unknown") {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("%w: an image index without images", ErrForeignCache)
	}
	return imgs, nil
}

// init makes the maps that index fills (several images fill one cache).
func (c *ImportedCache) init() {
	if c.layers == nil {
		c.layers = map[string]v1.Descriptor{}
		c.records = map[cache.Key]cacheRecord{}
	}
}

// index decodes the manifest and config of a cache image, adding its
// records and layers to c's.
func (c *ImportedCache) index(img v1.Image) error {
	m, err := img.Manifest()
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	switch m.Config.MediaType {
	case CacheConfigType:
	case types.OCIConfigJSON, types.DockerConfigJSON:
		return c.indexInline(img, m)
	default:
		return fmt.Errorf("%w: config media type %q, want %q", ErrForeignCache, m.Config.MediaType, CacheConfigType)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	recs, err := fromWire(raw)
	if err != nil {
		return err
	}
	c.init()
	for _, d := range m.Layers {
		switch d.MediaType {
		case types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer:
		default:
			return fmt.Errorf("layer %s: media type %q is not a gzip, zstd or uncompressed OCI layer", d.Digest, d.MediaType)
		}
		c.layers[d.Digest.String()] = d
	}
	for _, r := range recs {
		if _, ok := c.layers[r.Layer]; !r.EmptyLayer && !ok {
			return fmt.Errorf("record %s: layer %q is not in the manifest", r.Key, r.Layer)
		}
		c.records[r.Key] = r
	}
	return nil
}

// Source names the cache in progress output.
func (c *ImportedCache) Source() string { return c.loc.String() }

// Len is the number of records the cache holds.
func (c *ImportedCache) Len() int { return len(c.records) }

// Fetch returns the record of key to put in the cache, its layer
// recorded as the layer's compressed form so a later push or cache export
// sends the same blob. From a registry the layer is not downloaded: it is
// remote-backed (lazy.go) and fetched when something needs its bytes. From
// an OCI layout it is copied into the blob store and unpacked (checking
// its diffID) at once. A key the cache lacks is an error wrapping
// cache.ErrNotFound.
func (c *ImportedCache) Fetch(ctx context.Context, key cache.Key) (*cache.Record, error) {
	r, ok := c.records[key]
	if !ok {
		return nil, fmt.Errorf("cache %s: key %s: %w", c.loc, key, cache.ErrNotFound)
	}
	rec := &cache.Record{Key: key, DiffID: r.DiffID, Size: r.Size, EmptyLayer: r.EmptyLayer,
		CreatedBy: r.CreatedBy, Comment: r.Comment, Created: r.Created, RunMS: r.RunMS, ContentKey: r.ContentKey}
	if r.EmptyLayer {
		return rec, nil
	}
	desc := c.layers[r.Layer]
	if c.repo != nil && r.Size > 0 {
		if err := c.recordRemote(ctx, desc, r.DiffID); err != nil {
			return nil, fmt.Errorf("cache %s: layer %s of key %s: %w", c.loc, r.Layer, key, err)
		}
		if c.s.blobs.HasBlob(desc.Digest.String()) {
			rec.Blobs = []string{desc.Digest.String()}
		}
		return rec, nil
	}
	size, err := c.fetchLayer(ctx, desc, r.DiffID)
	if err != nil {
		return nil, fmt.Errorf("cache %s: layer %s of key %s: %w", c.loc, r.Layer, key, err)
	}
	rec.Size, rec.Blobs = size, []string{desc.Digest.String()}
	return rec, nil
}

// recordRemote records that the layer diffID is the blob desc of the
// cache's repository, unless the layer is here or has a compressed copy
// here with desc's codec.
func (c *ImportedCache) recordRemote(ctx context.Context, desc v1.Descriptor, diffID string) error {
	d, err := v1.NewHash(diffID)
	if err != nil {
		return err
	}
	comp := codecOf(desc.MediaType)
	if _, ok := c.s.compressedRecord(d, comp); ok || c.s.layers.Has(diffID) {
		return nil
	}
	if old, err := c.s.readCompressedRecord(d, comp); err == nil && old.Digest == desc.Digest {
		return nil
	}
	return c.s.writeCompressedRecord(ctx, newCompressedRecord(d, desc.Digest, desc.Size, comp))
}

// fetchLayer downloads the blob desc unless the store has it, unpacks it
// as layer diffID unless the layer store has it, and records the pair. It
// returns the layer's uncompressed size.
func (c *ImportedCache) fetchLayer(ctx context.Context, desc v1.Descriptor, diffID string) (int64, error) {
	s := c.s
	if !s.blobs.HasBlob(desc.Digest.String()) {
		rc, err := c.blobs(ctx, desc.Digest)
		if err != nil {
			return 0, err
		}
		s.traffic.ImportLayers.Add(1)
		_, _, err = s.blobs.WriteBlob(ctx, contextReader{ctx, &countingReadCloser{ReadCloser: rc, n: &s.traffic.ImportBytes}}, desc.Digest.String())
		rc.Close()
		if err != nil {
			return 0, err
		}
	}
	d, err := v1.NewHash(diffID)
	if err != nil {
		return 0, err
	}
	size, err := c.unpack(ctx, desc, diffID)
	if err != nil {
		return 0, err
	}
	// Recorded as the codec's default setting: its level is unknown, and
	// sending the blob the cache has is what a push wants.
	comp := codecOf(desc.MediaType)
	if _, ok := s.compressedRecord(d, comp); !ok {
		rec := newCompressedRecord(d, desc.Digest, desc.Size, comp)
		if err := s.writeCompressedRecord(ctx, rec); err != nil {
			return 0, err
		}
	}
	return size, nil
}

// unpack decompresses the blob desc into the layer store as diffID.
func (c *ImportedCache) unpack(ctx context.Context, desc v1.Descriptor, diffID string) (int64, error) {
	rc, err := c.s.blobs.OpenBlob(ctx, desc.Digest.String())
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	zr, err := decompress(rc, desc.MediaType)
	if err != nil {
		return 0, err
	}
	defer zr.Close()
	l, err := c.s.layers.Unpack(ctx, diffID, zr)
	if err != nil {
		return 0, err
	}
	return l.Size, nil
}

// WriteTar writes the uncompressed tar of the layer diffID of the layer
// store to w. A layer whose directory cannot reproduce its tar (it was
// unpacked from a remote cache, not committed here) is read from the gzip
// blob recorded for it instead, checking its diffID.
//
// A committed layer whose directory no longer serializes to diffID (changed
// on disk) is removed with the cache records that produced it, so the next
// build rebuilds it instead of hitting it again; the error says so.
func (s *Store) WriteTar(ctx context.Context, diffID string, w io.Writer) (int64, error) {
	if !s.layers.Has(diffID) {
		if d, err := v1.NewHash(diffID); err == nil && s.remoteBacked(d) {
			// The layer store's fetcher, when set, is the Materialize of
			// the store that knows how to reach the registries.
			if err := s.fetch(ctx, diffID); err != nil {
				return 0, fmt.Errorf("write tar of layer %s: %w", diffID, err)
			}
		}
	}
	n, err := s.layers.WriteTar(ctx, diffID, w)
	if errors.Is(err, snapshot.ErrModified) {
		return n, s.dropModified(context.WithoutCancel(ctx), diffID, err)
	}
	if !errors.Is(err, snapshot.ErrNotReproducible) {
		return n, err
	}
	d, herr := v1.NewHash(diffID)
	if herr != nil {
		return n, err
	}
	rec, ok := s.anyCompressedRecord(d)
	if !ok {
		return n, err
	}
	rc, err := s.blobs.OpenBlob(ctx, rec.Digest.String())
	if err != nil {
		return 0, fmt.Errorf("write tar of layer %s: %w", diffID, err)
	}
	defer rc.Close()
	zr, err := decompress(rc, rec.MediaType)
	if err != nil {
		return 0, fmt.Errorf("write tar of layer %s: blob %s: %w", diffID, rec.Digest, err)
	}
	defer zr.Close()
	h := sha256.New()
	n, err = io.Copy(io.MultiWriter(w, h), contextReader{ctx, zr})
	if err != nil {
		return n, fmt.Errorf("write tar of layer %s: %w", diffID, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex {
		return n, fmt.Errorf("write tar of layer %s: blob %s holds sha256:%s", diffID, rec.Digest, got)
	}
	return n, nil
}

// DropModifiedLayer completes the repair of an export that failed with err
// because a committed layer's directory changed on disk after its commit
// (a snapshot.ModifiedError; WriteTar has removed the layer and its
// records): the steps among steps (a build's) that made the layer lose
// their cache records and the layer is gone, so the next build runs them
// again. It returns those steps; for any other err, none. The error is err,
// or err with what the repair could not do.
func (s *Store) DropModifiedLayer(ctx context.Context, steps []cache.StepRecord, err error) ([]cache.StepRecord, error) {
	var me *snapshot.ModifiedError
	if !errors.As(err, &me) || s.c == nil || s.ls == nil {
		return nil, err
	}
	ctx = context.WithoutCancel(ctx)
	var dropped []cache.StepRecord
	for _, st := range steps {
		if st.Layer != me.DiffID {
			continue
		}
		if rerr := s.c.RemoveRecord(ctx, st.Key); rerr != nil {
			return nil, fmt.Errorf("%w (drop modified layer: %v)", err, rerr)
		}
		dropped = append(dropped, st)
	}
	if rerr := s.ls.Remove(ctx, me.DiffID); rerr != nil && !errors.Is(rerr, snapshot.ErrNotFound) {
		return nil, fmt.Errorf("%w (drop modified layer: %v)", err, rerr)
	}
	return dropped, err
}

// dropModified removes the layer diffID, found changed on disk (err), and
// the cache records that produced it.
func (s *Store) dropModified(ctx context.Context, diffID string, err error) error {
	if s.c == nil || s.ls == nil {
		return err
	}
	n, rerr := s.c.RemoveRecordsOf(ctx, diffID)
	if rerr != nil {
		return fmt.Errorf("%w (drop the layer: %v)", err, rerr)
	}
	if rerr := s.ls.Remove(ctx, diffID); rerr != nil && !errors.Is(rerr, snapshot.ErrNotFound) {
		return fmt.Errorf("%w (drop the layer: %v)", err, rerr)
	}
	return fmt.Errorf("%w; removed it and its cache records (%d): the next build rebuilds it", err, n)
}
