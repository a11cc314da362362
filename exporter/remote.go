package exporter

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/docker/go-units"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/builder-dev/builder/cache"
)

// ErrImageNotFound means the registry has no such repository, tag or
// manifest.
var ErrImageNotFound = errors.New("exporter: image not found in registry")

// RemoteOptions configure Pull and Push. The zero value pulls for
// linux/GOARCH with docker's credentials and HTTPS everywhere but on
// loopback registries.
type RemoteOptions struct {
	// Platform picks the image of a multi-platform index on Pull.
	Platform v1.Platform
	// Insecure lists registries ("host" or "host:port") reached over
	// plain HTTP or HTTPS without certificate checks. localhost,
	// 127.0.0.1 and [::1] are always allowed plain HTTP, as in docker.
	Insecure []string
	// Keychain supplies credentials; nil means authn.DefaultKeychain
	// (docker's config.json and credential helpers).
	Keychain authn.Keychain
	// Transport is the base HTTP transport; nil means a clone of
	// remote.DefaultTransport.
	Transport http.RoundTripper
	// Progress, if not nil, hears one line per layer fetched, compressed
	// or uploaded. It may be called from several goroutines at once.
	Progress func(string)
	// WrapTransport, if not nil, wraps the transport of every request
	// (after the insecure-registry rules), to observe the traffic.
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// Compression is how Push and ExportCache compress layers; the zero
	// value is gzip.
	Compression Compression
	// Lazy makes Pull store the manifest and config only: the layers are
	// remote-backed (lazy.go), fetched when a snapshot, an archive or a
	// push to another registry needs them, as a build's base images.
	Lazy bool
}

// Pull fetches the image ref names from its registry (for a multi-platform
// index, the image for o.Platform), stores it exactly as Load does —
// verified blobs, unpacked layers — and tags it under ref unless ref is a
// digest. It returns the stored manifest digest.
func (s *Store) Pull(ctx context.Context, ref string, o RemoteOptions) (v1.Hash, error) {
	r, err := o.parse(ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	reg := r.Context().RegistryStr()
	platform := o.platform()
	desc, err := remote.Get(r, o.remote(ctx, r.Context().Registry, remote.WithPlatform(platform))...)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("pull %s from %s: %w", ref, reg, classify(err))
	}
	img, err := desc.Image() // an index's image for the platform
	if err != nil {
		return v1.Hash{}, fmt.Errorf("pull %s from %s: %w", ref, reg, classify(err))
	}
	if err := checkPlatform(img, platform); err != nil {
		o.notify(fmt.Sprintf("[warning] %s: %v", ref, err))
	}
	var tags []string
	if _, ok := r.(name.Tag); ok {
		tags = []string{ref}
	}
	// An index is kept, and tagged, with the images pulled from it: the
	// other platforms' images come when a build for them needs them.
	index := desc.MediaType.IsIndex()
	imgTags := tags
	if index {
		imgTags = nil
	}
	var digest v1.Hash
	if o.Lazy {
		digest, err = s.putRemote(ctx, img, r.Context(), imgTags)
	} else {
		digest, err = s.importImage(ctx, img, imgTags, o.Progress)
	}
	if err == nil && index {
		err = s.putIndexOf(ctx, desc.Manifest, desc.Digest, tags)
	}
	if err != nil {
		return v1.Hash{}, fmt.Errorf("pull %s from %s: %w", ref, reg, classify(err))
	}
	s.rememberSources(ctx, r.Context(), layerDigests(img))
	return digest, nil
}

// putIndexOf stores a pulled image index (raw, digest) and points tags at it.
func (s *Store) putIndexOf(ctx context.Context, raw []byte, digest v1.Hash, tags []string) error {
	names, err := parseTags(tags)
	if err != nil {
		return err
	}
	if err := s.putBytes(ctx, raw, digest); err != nil {
		return err
	}
	for _, n := range names {
		if err := s.blobs.SetTag(ctx, n.Full(), digest.String()); err != nil {
			return err
		}
	}
	return nil
}

// Push pushes the stored image ref names to dst (a tag or digest
// reference; "" means ref itself). See PushImage.
func (s *Store) Push(ctx context.Context, ref, dst string, o RemoteOptions) (v1.Hash, error) {
	if dst == "" {
		dst = ref
	}
	plats, err := s.Platforms(ctx, ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	// The image, or every platform's image of a stored index, each with
	// its stored attestations bound to the pushed manifest.
	idx, err := s.resolve(ctx, ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	if len(plats) > 0 {
		imgs := make([]AttestedImage, len(plats))
		for i, p := range plats {
			if imgs[i].Image, err = s.imageAt(ctx, ref, p.Digest, true); err != nil {
				return v1.Hash{}, fmt.Errorf("push %s: platform %s: %w", ref, p.Platform, err)
			}
			att, err := s.attestationsIn(ctx, idx, p.Digest)
			if err != nil {
				return v1.Hash{}, fmt.Errorf("push %s: platform %s: %w", ref, p.Platform, err)
			}
			imgs[i].Attest = rebind(att, dst)
		}
		desc, err := s.PushAttestedIndex(ctx, imgs, dst, o)
		return desc.Digest, err
	}
	img, err := s.Image(ctx, ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	att, err := s.attestationsOf(ctx, idx)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	var desc v1.Descriptor
	if a := rebind(att, dst); a != nil {
		desc, err = s.PushAttested(ctx, img, a, dst, o)
	} else {
		desc, err = s.PushImage(ctx, img, dst, o)
	}
	return desc.Digest, err
}

// PushImage uploads img to dst. Layers stored uncompressed are gzipped
// first (once per layer: see Compressed) and the manifest is rewritten as
// an OCI manifest with gzip layer types; an image with compressed layers
// only is pushed byte for byte. Blobs the registry has are not uploaded.
// It returns the descriptor of the pushed manifest (as the registry
// resolves it).
//
// A compressed copy found damaged while it is uploaded (the registry gets
// nothing it would keep: it checks digests) has been removed by the read:
// the push is tried once more, which compresses that layer again.
func (s *Store) PushImage(ctx context.Context, img v1.Image, dst string, o RemoteOptions) (v1.Descriptor, error) {
	d, err := s.pushImage(ctx, img, dst, o)
	if blob, ok := damagedCopy(img, err); ok {
		o.notify(fmt.Sprintf("the compressed copy %s of a layer was damaged and is removed; compressing the layer again", shortDigest(blob)))
		d, err = s.pushImage(ctx, img, dst, o)
	}
	return d, err
}

// damagedCopy reports whether err says a blob was found damaged and
// removed that is not one of img's own layers (so it was a compressed copy
// made for a push, which can be made again).
func damagedCopy(img v1.Image, err error) (v1.Hash, bool) {
	var ce *cache.CorruptBlobError
	if !errors.As(err, &ce) || !ce.Removed {
		return v1.Hash{}, false
	}
	h, herr := v1.NewHash(ce.Digest)
	if herr != nil {
		return v1.Hash{}, false
	}
	m, merr := img.Manifest()
	if merr != nil {
		return v1.Hash{}, false
	}
	for _, l := range m.Layers {
		if l.Digest == h {
			return v1.Hash{}, false
		}
	}
	return h, true
}

func (s *Store) pushImage(ctx context.Context, img v1.Image, dst string, o RemoteOptions) (v1.Descriptor, error) {
	r, err := o.parse(dst)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("push %s: %w", dst, err)
	}
	reg := r.Context().RegistryStr()
	out, err := s.pushable(ctx, img, r.Context(), o)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("push %s to %s: %w", dst, reg, err)
	}
	if err := remote.Write(r, out, o.remote(ctx, r.Context().Registry, remote.WithJobs(pushJobs))...); err != nil {
		return v1.Descriptor{}, fmt.Errorf("push %s to %s: %w", dst, reg, classify(err))
	}
	s.rememberSources(ctx, r.Context(), layerDigests(out))
	desc, err := partial.Descriptor(out)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("push %s: %w", dst, err)
	}
	return *desc, nil
}

// pushJobs is how many blobs a push sends (or checks, or mounts) at once.
const pushJobs = 8

// pushable returns img with every layer as it leaves the machine with
// o.Compression (see Compressed), each announcing its upload through
// o.Progress and mountable from another repository of dst's registry
// known to hold it.
func (s *Store) pushable(ctx context.Context, img v1.Image, dst name.Repository, o RemoteOptions) (v1.Image, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("layers: %w", err)
	}
	gz, err := s.compressAll(ctx, layers, o.Compression, o.notify)
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(layers))
	changed := false
	for i, l := range layers {
		d, _ := l.DiffID()
		changed = changed || gz[d] != l
		out[i] = announcedLayer{Layer: gz[d], notify: o.notify}
	}
	out = s.mountable(out, dst, o)
	for i, l := range layers {
		if _, ok := l.(annotator); ok {
			out[i], changed = withAnnotations(l, out[i]), true
		}
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if changed {
		return rebuilt(img, rawCfg, configType(img), out)
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return newRawImage(rawManifest, rawCfg, out)
}

// compressAll returns the distinct layers among layers as they leave the
// machine with compression c, by diffID, compressing a few at a time.
func (s *Store) compressAll(ctx context.Context, layers []v1.Layer, c Compression, notify func(string)) (map[v1.Hash]v1.Layer, error) {
	var mu sync.Mutex
	gz := map[v1.Hash]v1.Layer{}
	seen := map[v1.Hash]bool{} // a twin layer is compressed once
	// The layers returned read their blobs with ctx, which outlives the
	// group: a failure does not cancel the others' compression.
	var g errgroup.Group
	g.SetLimit(2) // each compression is parallel itself
	for i, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		d, err := l.DiffID()
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if seen[d] {
			continue
		}
		seen[d] = true
		if c.keeps(mt) {
			gz[d] = l
			continue
		}
		g.Go(func() error {
			cl, err := s.Compressed(ctx, l, c, notify)
			if err != nil {
				return fmt.Errorf("layer %d: %w", i, err)
			}
			mu.Lock()
			gz[d] = cl
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return gz, nil
}

// configType is the config media type for an OCI manifest of img: Docker's
// config type becomes OCI's (the JSON is the same).
func configType(img v1.Image) types.MediaType {
	if m, err := img.Manifest(); err == nil && m.Config.MediaType != "" && m.Config.MediaType != types.DockerConfigJSON {
		return m.Config.MediaType
	}
	return types.OCIConfigJSON
}

// announcedLayer reports when its bytes are read for upload: remote.Write
// reads a layer only when the registry lacks it.
type announcedLayer struct {
	v1.Layer
	notify func(string)
	count  *atomic.Int64 // if not nil, counts the bytes read for upload
}

func (l announcedLayer) Compressed() (io.ReadCloser, error) {
	if l.notify != nil {
		d, _ := l.Digest()
		size, _ := l.Size()
		l.notify(fmt.Sprintf("uploading layer %s (%s)", shortDigest(d), units.HumanSize(float64(size))))
	}
	rc, err := l.Layer.Compressed()
	if err != nil || l.count == nil {
		return rc, err
	}
	return &countingReadCloser{ReadCloser: rc, n: l.count}, nil
}

// checkPlatform reports an image whose config names another OS or
// architecture than p (a single-platform image picked for the wrong host).
func checkPlatform(img v1.Image, p v1.Platform) error {
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	if cfg.OS != "" && cfg.Architecture != "" && (cfg.OS != p.OS || cfg.Architecture != p.Architecture) {
		return fmt.Errorf("image platform %s/%s does not match the build platform %s/%s", cfg.OS, cfg.Architecture, p.OS, p.Architecture)
	}
	return nil
}

// classify marks "no such image" answers with ErrImageNotFound.
func classify(err error) error {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return err
	}
	if terr.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: %w", ErrImageNotFound, err)
	}
	for _, d := range terr.Errors {
		switch d.Code {
		case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode:
			return fmt.Errorf("%w: %w", ErrImageNotFound, err)
		}
	}
	return err
}

func (o RemoteOptions) notify(msg string) {
	if o.Progress != nil {
		o.Progress(msg)
	}
}

func (o RemoteOptions) platform() v1.Platform {
	if o.Platform.OS == "" {
		return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	return o.Platform
}

// parse parses ref ("busybox" is docker.io/library/busybox:latest),
// marking the registry insecure when o allows it.
func (o RemoteOptions) parse(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("parse reference: %w", err)
	}
	if !o.insecure(r.Context().RegistryStr()) {
		return r, nil
	}
	return name.ParseReference(ref, name.WeakValidation, name.Insecure)
}

// insecure reports whether o allows plain HTTP to host ("host[:port]").
func (o RemoteOptions) insecure(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	switch h {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	for _, v := range o.Insecure {
		v = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(v, "http://"), "https://"), "/")
		if v == host || v == h {
			return true
		}
	}
	return false
}

// remote returns the go-containerregistry options for one registry.
func (o RemoteOptions) remote(ctx context.Context, reg name.Registry, extra ...remote.Option) []remote.Option {
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(o.transport(reg.RegistryStr())),
		remote.WithUserAgent("builder"),
	}
	return append(opts, extra...)
}

// transport is the base transport, without certificate checks for an
// insecure registry, refusing plain HTTP to any host o does not allow
// (go-containerregistry falls back to HTTP for private addresses too).
func (o RemoteOptions) transport(host string) http.RoundTripper {
	base := o.Transport
	if base == nil {
		base = remote.DefaultTransport.(*http.Transport).Clone()
	}
	if t, ok := base.(*http.Transport); ok && o.insecure(host) && !isLoopback(host) {
		t = t.Clone()
		if t.TLSClientConfig == nil {
			t.TLSClientConfig = &tls.Config{}
		}
		t.TLSClientConfig.InsecureSkipVerify = true // the user named this registry insecure
		base = t
	}
	var rt http.RoundTripper = httpGuard{base: base, o: o}
	if o.WrapTransport != nil {
		rt = o.WrapTransport(rt)
	}
	return rt
}

func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	return h == "localhost" || h == "127.0.0.1" || h == "::1"
}

// httpGuard refuses plain-HTTP requests to registries not allowed them.
type httpGuard struct {
	base http.RoundTripper
	o    RemoteOptions
}

func (g httpGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.o.insecure(req.URL.Host) {
		return nil, fmt.Errorf("registry %s: plain HTTP refused (allow it with --insecure-registry %s)", req.URL.Host, req.URL.Host)
	}
	return g.base.RoundTrip(req)
}
