package exporter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/docker/go-units"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/snapshot"
)

// blobStore is the part of cache.Store the image view uses: blobs and the
// image index.
type blobStore interface {
	blobOpener
	WriteBlob(ctx context.Context, r io.Reader, want string) (string, int64, error)
	ReadBlob(ctx context.Context, digest string) ([]byte, error)
	HasBlob(digest string) bool
	BlobTime(digest string) (time.Time, error)
	CopyBlob(ctx context.Context, digest string, w cache.RangeWriter) (int64, error)
	SetTag(ctx context.Context, name, digest string) error
	ResolveTag(ctx context.Context, name string) (string, error)
	Tags(ctx context.Context) ([]cache.Tag, error)
	RemoveTag(ctx context.Context, name string) error
	WriteAreaFile(ctx context.Context, a cache.Area, name string, data []byte) error
	// ScratchDir is a directory for this process's temporary files.
	ScratchDir() (string, error)
}

// layerStore is the part of snapshot.LayerStore the image view uses.
type layerStore interface {
	tarWriter
	Has(diffID string) bool
	Unpack(ctx context.Context, diffID string, r io.Reader) (snapshot.Layer, error)
}

// Store is the local image store seen as images: manifests and configs are
// blobs, tags live in the blob store's index, layers built here stay in the
// layer store and are referenced by diffID with the uncompressed media
// type, other layers are blobs as they came. It holds no state of its own
// and is safe for concurrent use as far as its stores are.
type Store struct {
	blobs  blobStore
	layers layerStore
	// c and ls are blobs and layers as concrete stores, for diagnosis and
	// repair (Fsck, DamagedError's advice); nil in tests of fakes.
	c  *cache.Store
	ls *snapshot.LayerStore
	// compressedDir (the store's cache.Compressed area) maps diffIDs of
	// uncompressed layers to the gzip blobs made of them for a push (see
	// Compressed): one small JSON file per diffID, <hex>.json.
	compressedDir string
	// sourcesDir (the store's cache.Sources area) lists, per blob
	// digest, the registry repositories known to hold it: <hex>.json.
	sourcesDir string
	// remoteOpts reach registries for remote-backed layers (lazy.go).
	remoteOpts RemoteOptions
	traffic    Traffic
}

// NewStore returns the image view over blobs and layers.
func NewStore(blobs *cache.Store, layers *snapshot.LayerStore) *Store {
	return &Store{blobs: blobs, layers: layers, c: blobs, ls: layers, compressedDir: blobs.AreaPath(cache.Compressed), sourcesDir: blobs.AreaPath(cache.Sources)}
}

// ImageSummary is one line of List.
type ImageSummary struct {
	Tags         []string  `json:"tags"` // familiar names, "app:v1"
	Digest       string    `json:"digest"`
	ConfigDigest string    `json:"configDigest"` // docker's image ID
	Size         int64     `json:"size"`         // config plus layers as stored
	Created      time.Time `json:"created"`
	// Damaged says why the image cannot be read (List reports it too).
	Damaged string `json:"damaged,omitempty"`
	// Platforms are the platforms of an image index (a multi-platform
	// build); ConfigDigest and Created are then its host-platform image's.
	Platforms []string `json:"platforms,omitempty"`
}

// ImageInspect is what Inspect reports.
type ImageInspect struct {
	ID       string         `json:"id"` // config digest
	Digest   string         `json:"digest"`
	RepoTags []string       `json:"repoTags"`
	Size     int64          `json:"size"`
	Manifest *v1.Manifest   `json:"manifest"`
	Config   *v1.ConfigFile `json:"config"`
	// Attestations are the image's stored attestations (attest_store.go).
	Attestations *Attestations `json:"attestations,omitempty"`
	// Index is the digest of the image index the name points at, and
	// Platforms its images, when the image is one platform of several;
	// Digest is then that platform's manifest.
	Index     string          `json:"index,omitempty"`
	Platforms []PlatformImage `json:"platforms,omitempty"`
}

// Put stores img's config, manifest and any layer blob the stores lack,
// then points tags at it. It returns the manifest digest.
func (s *Store) Put(ctx context.Context, img v1.Image, tags []string) (v1.Hash, error) {
	names, err := parseTags(tags)
	if err != nil {
		return v1.Hash{}, err
	}
	digest, err := s.putImage(ctx, img)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("put image: %w", err)
	}
	for _, n := range names {
		if err := s.blobs.SetTag(ctx, n.Full(), digest.String()); err != nil {
			return v1.Hash{}, fmt.Errorf("put image %s: %w", n.Familiar(), err)
		}
	}
	return digest, nil
}

func (s *Store) putImage(ctx context.Context, img v1.Image) (v1.Hash, error) {
	layers, err := img.Layers()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layers: %w", err)
	}
	for i, l := range layers {
		if err := s.putLayer(ctx, l); err != nil {
			return v1.Hash{}, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("config: %w", err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("config digest: %w", err)
	}
	if err := s.putBytes(ctx, rawCfg, cfgName); err != nil {
		return v1.Hash{}, fmt.Errorf("config: %w", err)
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("manifest: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("manifest digest: %w", err)
	}
	return digest, s.putBytes(ctx, rawManifest, digest)
}

func (s *Store) putBytes(ctx context.Context, data []byte, digest v1.Hash) error {
	if s.blobs.HasBlob(digest.String()) {
		// A manifest or a config is small: check it, so that storing an
		// image again repairs a damaged copy (ReadBlob removes it).
		_, err := s.blobs.ReadBlob(ctx, digest.String())
		if err == nil || !errors.Is(err, cache.ErrCorrupt) {
			return err
		}
	}
	_, _, err := s.blobs.WriteBlob(ctx, strings.NewReader(string(data)), digest.String())
	return err
}

// putLayer writes l as a blob unless it is already a blob or, for a plain
// tar, a layer of the layer store.
func (s *Store) putLayer(ctx context.Context, l v1.Layer) error {
	d, err := layerDescriptor(l)
	if err != nil {
		return err
	}
	if s.blobs.HasBlob(d.Digest.String()) {
		return nil
	}
	if isUncompressed(d.MediaType) && s.layers.Has(d.Digest.String()) {
		return nil
	}
	// A remote-backed layer is fetched when read (lazy.go): a layer of a
	// lazily pulled image, or one hit in a remote cache.
	if diffID, err := l.DiffID(); err == nil {
		if _, _, ok := s.remoteBlob(diffID, d); ok {
			return nil
		}
	}
	if isUncompressed(d.MediaType) && s.remoteBacked(d.Digest) {
		return nil
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	_, _, err = s.blobs.WriteBlob(ctx, rc, d.Digest.String())
	return err
}

// Image returns the stored image ref names: a tag ("busybox" means
// "docker.io/library/busybox:latest"), "name@sha256:…", a manifest or
// config digest, or an unambiguous prefix of one. Every part of the image
// must be there: a manifest, config or layer that is damaged or missing is
// a *DamagedError naming it and what to do.
func (s *Store) Image(ctx context.Context, ref string) (v1.Image, error) {
	return s.image(ctx, ref, true)
}

// StoredAt returns when this store got the image whose manifest has
// digest: pulled, loaded or imported it, or built it.
func (s *Store) StoredAt(digest string) (time.Time, error) {
	return s.blobs.BlobTime(digest)
}

// Describe is Image for showing an image (history): layers that cannot be
// read fail only when read.
func (s *Store) Describe(ctx context.Context, ref string) (v1.Image, error) {
	return s.image(ctx, ref, false)
}

func (s *Store) image(ctx context.Context, ref string, whole bool) (v1.Image, error) {
	digest, err := s.resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	// An index (a multi-platform build) reads as its host-platform image.
	child, ok, err := s.platformChild(ctx, ref, digest, nil)
	if err != nil {
		return nil, err
	}
	if ok {
		digest = child
	}
	return s.imageAt(ctx, ref, digest, whole)
}

// imageAt reads the image digest (asked by ref, for messages). With whole,
// a layer that is in the store neither as a blob nor as a layer directory
// that reproduces it is an error; else it fails when read.
func (s *Store) imageAt(ctx context.Context, ref, digest string, whole bool) (v1.Image, error) {
	rawManifest, err := s.blobs.ReadBlob(ctx, digest)
	if err != nil {
		if !isDamage(err) && !errors.Is(err, cache.ErrNotFound) {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		return nil, s.damaged(ctx, ref, digest, "manifest", digest, -1, err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(rawManifest, &m); err != nil {
		return nil, s.damaged(ctx, ref, digest, "manifest", digest, -1, fmt.Errorf("does not decode: %v", err))
	}
	if !m.MediaType.IsImage() && m.MediaType != "" {
		return nil, fmt.Errorf("image %s: manifest %s: media type %q is not an image", ref, digest, m.MediaType)
	}
	cfgDigest := m.Config.Digest.String()
	rawCfg, err := s.blobs.ReadBlob(ctx, cfgDigest)
	if err != nil {
		if !isDamage(err) && !errors.Is(err, cache.ErrNotFound) {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		return nil, s.damaged(ctx, ref, digest, "config", cfgDigest, -1, err)
	}
	cfg, err := v1.ParseConfigFile(strings.NewReader(string(rawCfg)))
	if err != nil {
		return nil, s.damaged(ctx, ref, digest, "config", cfgDigest, -1, fmt.Errorf("does not decode: %v", err))
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, s.damaged(ctx, ref, digest, "config", cfgDigest, -1, fmt.Errorf("lists %d diff_ids but the manifest has %d layers", len(cfg.RootFS.DiffIDs), len(m.Layers)))
	}
	layers := make([]v1.Layer, len(m.Layers))
	for i, d := range m.Layers {
		part := layerPart(cfg, i)
		l, err := s.layer(ctx, d, cfg.RootFS.DiffIDs[i])
		if err != nil {
			derr := s.damaged(ctx, ref, digest, part, d.Digest.String(), i, err)
			if whole {
				return nil, derr
			}
			layers[i] = &missingLayer{desc: d, diffID: cfg.RootFS.DiffIDs[i], err: derr}
			continue
		}
		blob := d.Digest.String()
		layers[i] = &namedLayer{Layer: l, wrap: func(err error) error {
			var de *DamagedError
			if !isDamage(err) || errors.As(err, &de) {
				return err
			}
			return s.damaged(context.WithoutCancel(ctx), ref, digest, part, blob, i, err)
		}}
	}
	return newRawImage(rawManifest, rawCfg, layers)
}

// layer returns a stored image's layer: its blob, or the layer directory
// that reproduces it (a layer built here, or one with a compressed copy).
func (s *Store) layer(ctx context.Context, d v1.Descriptor, diffID v1.Hash) (v1.Layer, error) {
	if s.blobs.HasBlob(d.Digest.String()) {
		return LayerFromBlob(ctx, s.blobs, d, diffID)
	}
	if rec, repos, ok := s.remoteBlob(diffID, d); ok {
		return &remoteBlobLayer{s: s, ctx: ctx, rec: rec, repos: repos, mt: d.MediaType}, nil
	}
	if isUncompressed(d.MediaType) && d.Digest == diffID && (s.reproducible(diffID) || s.remoteBacked(diffID)) {
		return LayerFromStore(ctx, s, diffID.String(), d.Size)
	}
	return nil, errNoLayer
}

// reproducible reports whether WriteTar can give the tar of diffID: the
// layer was committed here, or it has a compressed copy.
func (s *Store) reproducible(diffID v1.Hash) bool {
	if !s.layers.Has(diffID.String()) {
		return false
	}
	if s.ls == nil || s.ls.Committed(diffID.String()) {
		return true
	}
	_, ok := s.anyCompressedRecord(diffID)
	return ok
}

// Tag points dst at the image src names.
func (s *Store) Tag(ctx context.Context, src, dst string) error {
	digest, err := s.resolve(ctx, src)
	if err != nil {
		return err
	}
	n, err := parseTag(dst)
	if err != nil {
		return err
	}
	return s.blobs.SetTag(ctx, n.Full(), digest)
}

// Remove deletes the tag ref or, for a digest, every tag of that image.
// Blobs and layers stay until the cache is pruned.
func (s *Store) Remove(ctx context.Context, ref string) error {
	if n, err := parseTag(ref); err == nil {
		err := s.blobs.RemoveTag(ctx, n.Full())
		if err == nil || !errors.Is(err, cache.ErrNotFound) {
			return err
		}
	}
	digest, err := s.resolve(ctx, ref)
	if err != nil {
		return err
	}
	tags, err := s.blobs.Tags(ctx)
	if err != nil {
		return err
	}
	for _, t := range tags {
		if t.Digest == digest {
			if err := s.blobs.RemoveTag(ctx, t.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

// Save writes the images refs name to path as a docker-save archive; refs
// that are tags keep their names.
func (s *Store) Save(ctx context.Context, path string, refs []string) error {
	var set tagSet
	for _, ref := range refs {
		digest, err := s.resolve(ctx, ref)
		if err != nil {
			return err
		}
		img, err := s.imageAt(ctx, ref, digest, true)
		var de *DamagedError
		if errors.As(err, &de) {
			return err // it names the image
		}
		if err != nil {
			return fmt.Errorf("save %s: %w", ref, err)
		}
		h, err := v1.NewHash(digest)
		if err != nil {
			return err
		}
		set.add(h, img, tagOf(ref))
	}
	return WriteDocker(ctx, path, set.list())
}

// tagOf returns ref when it names a tag, "" for digests and prefixes.
func tagOf(ref string) string {
	if strings.Contains(ref, "@") || looksLikeDigest(ref) {
		return ""
	}
	if _, err := parseTag(ref); err != nil {
		return ""
	}
	return ref
}

// Load reads the archive at path, stores its blobs (compressed layers as
// they are), unpacks every layer into the layer store (checking its
// diffID), and tags the images. It returns the loaded tags (familiar form),
// or the digest of an untagged image.
func (s *Store) Load(ctx context.Context, path string) ([]string, error) {
	images, err := ReadArchive(ctx, path)
	if err != nil {
		return nil, err
	}
	var loaded []string
	for i, t := range images {
		digest, err := s.importImage(ctx, t.Image, t.Tags, nil)
		if err != nil {
			return nil, fmt.Errorf("load %s: image %d: %w", path, i, err)
		}
		names, _ := parseTags(t.Tags)
		for _, n := range names {
			loaded = append(loaded, n.Familiar())
		}
		if len(names) == 0 {
			loaded = append(loaded, digest.String())
		}
	}
	return loaded, nil
}

// importImage brings an image from outside (an archive, a registry) into
// the store: every layer becomes a verified blob and an unpacked layer,
// then config and manifest are stored and tags point at it. notify, if not
// nil, hears one line per layer fetched. It returns the manifest digest.
func (s *Store) importImage(ctx context.Context, img v1.Image, tags []string, notify func(string)) (v1.Hash, error) {
	if err := s.loadLayers(ctx, img, notify); err != nil {
		return v1.Hash{}, err
	}
	return s.Put(ctx, img, tags)
}

// loadLayers loads the layers of img, a few at a time.
func (s *Store) loadLayers(ctx context.Context, img v1.Image, notify func(string)) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i, l := range layers {
		g.Go(func() error {
			if err := s.loadLayer(gctx, l, notify); err != nil {
				return fmt.Errorf("layer %d: %w", i, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// loadLayer stores l as a verified blob and as an unpacked layer. A layer
// that has neither is read once: the stream goes into the blob store
// (checking its digest) and, at the same time, through the decompressor
// into the layer store (checking its diffID), so a remote layer is
// unpacked while it downloads.
func (s *Store) loadLayer(ctx context.Context, l v1.Layer, notify func(string)) error {
	d, err := layerDescriptor(l)
	if err != nil {
		return err
	}
	diffID, err := l.DiffID()
	if err != nil {
		return err
	}
	haveBlob, haveLayer := s.blobs.HasBlob(d.Digest.String()), s.layers.Has(diffID.String())
	if haveBlob && haveLayer {
		return nil
	}
	if !haveBlob && notify != nil {
		notify(fmt.Sprintf("fetching layer %s (%s)", shortDigest(d.Digest), units.HumanSize(float64(d.Size))))
	}
	switch {
	case haveBlob:
		return s.unpackBlob(ctx, d, diffID)
	case haveLayer:
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		defer rc.Close()
		_, _, err = s.blobs.WriteBlob(ctx, rc, d.Digest.String())
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	return s.storeAndUnpack(ctx, rc, d, diffID)
}

// storeAndUnpack reads the blob d from rc once, into the blob store
// (checking its digest) and through the decompressor into the layer store
// as diffID (checking it), both at once.
func (s *Store) storeAndUnpack(ctx context.Context, rc io.Reader, d v1.Descriptor, diffID v1.Hash) error {
	pr, pw := io.Pipe()
	blobDone := make(chan error, 1)
	go func() {
		_, _, err := s.blobs.WriteBlob(ctx, io.TeeReader(contextReader{ctx, rc}, pw), d.Digest.String())
		pw.CloseWithError(err) // nil: the unpacking side reads EOF
		blobDone <- err
	}()
	err := s.unpackStream(ctx, pr, diffID)
	// Let the blob writer read to the end even if the decompressor
	// stopped early, or stop it when unpacking failed.
	if err == nil {
		_, err = io.Copy(io.Discard, pr)
	}
	pr.CloseWithError(fmt.Errorf("unpack layer %s: %w", diffID, errStopped(err)))
	berr := <-blobDone
	if err != nil {
		return err // the cause; the blob writer's error only repeats it
	}
	return berr
}

func errStopped(err error) error {
	if err == nil {
		return errors.New("stopped")
	}
	return err
}

// unpackBlob unpacks the stored blob d as the layer diffID.
func (s *Store) unpackBlob(ctx context.Context, d v1.Descriptor, diffID v1.Hash) error {
	rc, err := s.blobs.OpenBlob(ctx, d.Digest.String())
	if err != nil {
		return err
	}
	defer rc.Close()
	return s.unpackStream(ctx, rc, diffID)
}

// unpackStream decompresses r (gzip, zstd or none, by its magic bytes)
// into the layer store as diffID.
func (s *Store) unpackStream(ctx context.Context, r io.Reader, diffID v1.Hash) error {
	zr, _, err := snapshot.Decompress(r)
	if err != nil {
		return err
	}
	defer zr.Close()
	_, err = s.layers.Unpack(ctx, diffID.String(), zr)
	return err
}

// shortDigest is the first 12 hex digits of h, as docker shows layers.
func shortDigest(h v1.Hash) string {
	if len(h.Hex) > 12 {
		return h.Hex[:12]
	}
	return h.Hex
}

// summaries groups the index by image. An image that cannot be read has
// a summary with Damaged set, and its error is among errs.
func (s *Store) summaries(ctx context.Context) (map[string]*ImageSummary, []error, error) {
	tags, err := s.blobs.Tags(ctx)
	if err != nil {
		return nil, nil, err
	}
	out := map[string]*ImageSummary{}
	var errs []error
	for _, t := range tags {
		sum, ok := out[t.Digest]
		if !ok {
			if sum, err = s.summary(ctx, cache.FamiliarName(t.Name), t.Digest); err != nil {
				if ctx.Err() != nil {
					return nil, nil, err
				}
				errs = append(errs, err)
				sum = &ImageSummary{Digest: t.Digest, Damaged: err.Error()}
			}
			out[t.Digest] = sum
		}
		sum.Tags = append(sum.Tags, cache.FamiliarName(t.Name))
	}
	return out, errs, nil
}

func (s *Store) summary(ctx context.Context, ref, digest string) (*ImageSummary, error) {
	plats, err := s.platformsAt(ctx, digest)
	if err != nil {
		return nil, err
	}
	child, _, err := s.platformChild(ctx, ref, digest, nil)
	if err != nil {
		return nil, err
	}
	if plats == nil {
		plats, child = []PlatformImage{{Digest: digest}}, digest
	}
	sum := &ImageSummary{Digest: digest}
	for _, p := range plats {
		if p.Digest != child && !s.blobs.HasBlob(p.Digest) {
			continue // a pulled index holds the platforms pulled
		}
		img, err := s.imageAt(ctx, ref, p.Digest, false)
		if err != nil {
			return nil, err
		}
		m, err := img.Manifest()
		if err != nil {
			return nil, err
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		sum.Size += m.Config.Size
		for _, l := range m.Layers {
			sum.Size += l.Size
		}
		if p.Digest == child {
			sum.ConfigDigest, sum.Created = m.Config.Digest.String(), cfg.Created.Time
		}
		if p.Platform != "" {
			sum.Platforms = append(sum.Platforms, p.Platform)
		}
	}
	return sum, nil
}

// List returns the tagged images, newest first. Images that cannot be read
// are listed with Damaged set, after the others, and the error joins
// their *DamagedErrors.
func (s *Store) List(ctx context.Context) ([]ImageSummary, error) {
	sums, errs, err := s.summaries(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]ImageSummary, 0, len(sums))
	for _, sum := range sums {
		out = append(out, *sum)
	}
	sort.Slice(out, func(i, j int) bool {
		if (out[i].Damaged == "") != (out[j].Damaged == "") {
			return out[i].Damaged == ""
		}
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].Digest < out[j].Digest
	})
	return out, errors.Join(errs...)
}

// Inspect returns the manifest, config and digests of the image ref names
// (for an index, of its image for platform p; nil: the host's).
func (s *Store) Inspect(ctx context.Context, ref string, p *v1.Platform) (*ImageInspect, error) {
	digest, err := s.resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	plats, err := s.platformsAt(ctx, digest)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", ref, err)
	}
	index := ""
	if plats != nil {
		child, _, err := s.platformChild(ctx, ref, digest, p)
		if err != nil {
			return nil, err
		}
		index, digest = digest, child
	}
	sum, err := s.summary(ctx, ref, digest)
	var de *DamagedError
	if errors.As(err, &de) {
		return nil, err // it names the image
	}
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", ref, err)
	}
	img, err := s.imageAt(ctx, ref, digest, false)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", ref, err)
	}
	tagged := digest
	if index != "" {
		tagged = index
	}
	tags, err := s.tagsOf(ctx, tagged)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", ref, err)
	}
	att, err := s.attestationsOf(ctx, digest)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", ref, err)
	}
	return &ImageInspect{ID: sum.ConfigDigest, Digest: digest, RepoTags: tags, Size: sum.Size, Manifest: m, Config: cfg,
		Attestations: att, Index: index, Platforms: plats}, nil
}

func (s *Store) tagsOf(ctx context.Context, digest string) ([]string, error) {
	tags, err := s.blobs.Tags(ctx)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, t := range tags {
		if t.Digest == digest {
			out = append(out, cache.FamiliarName(t.Name))
		}
	}
	return out, nil
}

// StoredLayer is a layer of the layer store, or one imported from a remote
// cache and read from its kept blob (see WriteTar), as an image layer. Its
// bytes are produced when the image is exported, so it is not bound to the
// context of the build that made it.
func (s *Store) StoredLayer(diffID string, size int64) (v1.Layer, error) {
	return LayerFromStore(context.Background(), s, diffID, size)
}

// NewImage assembles an image from its raw config and layers (NewImageRaw).
func (s *Store) NewImage(rawConfig []byte, layers []v1.Layer) (v1.Image, error) {
	return NewImageRaw(rawConfig, layers)
}
