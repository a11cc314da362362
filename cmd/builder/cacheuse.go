package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/executor"
	"github.com/builder-dev/builder/exporter"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// What each --cache-from and --cache-to ref and each push cost is counted
// here, around the calls that do the work: registry traffic through a
// metering transport, local layouts by their blobs, time by the clock.

// registryMeter counts the traffic of registry requests: bytes each way,
// and per repository the blobs uploaded, those the registry already had
// (or mounted from another repository) and the manifests put.
type registryMeter struct {
	mu        sync.Mutex
	sent      int64
	received  int64
	repos     map[string]*repoTraffic
	lastError error
}

type repoTraffic struct {
	uploaded  map[string]bool // blob digests uploaded
	present   map[string]bool // blob digests the registry had or mounted
	manifests [][]byte        // bodies of manifests put
}

func newRegistryMeter() *registryMeter { return &registryMeter{repos: map[string]*repoTraffic{}} }

// options returns o with its traffic going through m.
func (m *registryMeter) options(o exporter.RemoteOptions) exporter.RemoteOptions {
	o.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return meteredTransport{m: m, base: rt} }
	return o
}

func (m *registryMeter) repo(name string) *repoTraffic {
	r := m.repos[name]
	if r == nil {
		r = &repoTraffic{uploaded: map[string]bool{}, present: map[string]bool{}}
		m.repos[name] = r
	}
	return r
}

// bytes returns the bytes sent and received so far.
func (m *registryMeter) bytes() (sent, received int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sent, m.received
}

// layers returns how many layers of the manifests put to repo were
// uploaded and how many the registry already had. When no image manifest
// was put (the registry had it: at most an index and attestations went
// up, nothing else was checked or sent), the registry had every one of
// the total layers.
func (m *registryMeter) layers(repo string, total int) (pushed, skipped int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.repos[repo]
	if r == nil || len(r.manifests) == 0 {
		return 0, total
	}
	seen := map[string]bool{}
	images := 0
	for _, raw := range r.manifests {
		var man v1.Manifest
		if json.Unmarshal(raw, &man) != nil || man.ArtifactType != "" || man.Config.Digest.Hex == "" {
			continue // an index, or an attestation manifest: no layers of the image
		}
		images++
		for _, l := range man.Layers {
			d := l.Digest.String()
			if seen[d] {
				continue
			}
			seen[d] = true
			if r.uploaded[d] {
				pushed++
			} else {
				skipped++
			}
		}
	}
	if images == 0 {
		// The registry had the image manifest (only an index or an
		// attestation manifest went up): every layer was skipped.
		return 0, total
	}
	return pushed, skipped
}

type meteredTransport struct {
	m    *registryMeter
	base http.RoundTripper
}

// maxManifest bounds the manifest bodies kept.
const maxManifest = 4 << 20

func (t meteredTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	repo, kind, digest := registryPath(req.URL.Path)
	var manifest *bytes.Buffer
	if req.Body != nil {
		body := io.Reader(req.Body)
		if kind == "manifests" && req.Method == http.MethodPut {
			manifest = &bytes.Buffer{}
			body = io.TeeReader(body, &cappedBuffer{b: manifest, n: maxManifest})
		}
		req.Body = &countingBody{r: body, c: req.Body, n: &t.m.sent, mu: &t.m.mu}
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &countingBody{r: resp.Body, c: resp.Body, n: &t.m.received, mu: &t.m.mu}
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	r := t.m.repo(repo)
	q := req.URL.Query()
	switch {
	case kind == "blobs" && req.Method == http.MethodHead && resp.StatusCode == http.StatusOK:
		r.present[digest] = true
	case kind == "uploads" && req.Method == http.MethodPost && q.Get("mount") != "" && resp.StatusCode == http.StatusCreated:
		r.present[q.Get("mount")] = true
	case req.Method == http.MethodPut && q.Get("digest") != "" && resp.StatusCode == http.StatusCreated:
		r.uploaded[q.Get("digest")] = true
	case manifest != nil && resp.StatusCode/100 == 2:
		r.manifests = append(r.manifests, manifest.Bytes())
	}
	return resp, nil
}

// registryPath splits a registry API path, /v2/<repo>/blobs/<digest>,
// /v2/<repo>/blobs/uploads/<id> or /v2/<repo>/manifests/<ref>, into the
// repository, "blobs", "uploads" or "manifests", and the last element.
func registryPath(p string) (repo, kind, last string) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return "", "", ""
	}
	for _, k := range []string{"/blobs/uploads", "/blobs/", "/manifests/"} {
		if i := strings.LastIndex(rest, k); i >= 0 {
			repo, last = rest[:i], strings.Trim(rest[i+len(k):], "/")
			kind = strings.Trim(k, "/")
			if k == "/blobs/uploads" {
				kind = "uploads"
			}
			return repo, kind, last
		}
	}
	return "", "", ""
}

type countingBody struct {
	r  io.Reader
	c  io.Closer
	n  *int64
	mu *sync.Mutex
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.mu.Lock()
	*b.n += int64(n)
	b.mu.Unlock()
	return n, err
}

func (b *countingBody) Close() error { return b.c.Close() }

// cappedBuffer keeps the first n bytes written to it.
type cappedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *cappedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// repoOf is the repository of an image reference as the registry API
// names it ("localhost:5000/cache/app:tag" → "cache/app").
func repoOf(ref string) string {
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return ""
	}
	return r.Context().RepositoryStr()
}

// cacheUse is the use of one cache ref, filled from several goroutines.
type cacheUse struct {
	mu    sync.Mutex
	use   cache.CacheUse
	meter *registryMeter // registry refs
}

func (u *cacheUse) add(f func(*cache.CacheUse)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	f(&u.use)
}

// result is the use with the registry traffic counted in.
func (u *cacheUse) result() cache.CacheUse {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := u.use
	if u.meter != nil {
		sent, received := u.meter.bytes()
		if out.Direction == "import" {
			out.Bytes = received
		} else {
			out.Bytes = sent
		}
	}
	return out
}

// importCachesMetered imports each --cache-from ref, counting what it
// costs and gives. A ref that cannot be read (unreachable, unauthorized,
// not a cache) or that is empty is a warning, never an error: the build
// goes on without it, as BuildKit's does, but says so.
func importCachesMetered(ctx context.Context, st *stores, specs []cacheSpec, ro func() exporter.RemoteOptions, notice func(string)) ([]executor.RemoteCache, []*cacheUse, error) {
	var out []executor.RemoteCache
	var uses []*cacheUse
	for _, c := range specs {
		u := &cacheUse{use: cache.CacheUse{Ref: c.loc.String(), Direction: "import"}}
		uses = append(uses, u)
		o := ro()
		if c.loc.Dir == "" {
			u.meter = newRegistryMeter()
			o = u.meter.options(o)
		}
		start := time.Now()
		got, err := importCaches(ctx, st, []cacheSpec{c}, o, notice)
		u.add(func(cu *cache.CacheUse) { cu.DurationMS += time.Since(start).Milliseconds() })
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if err != nil {
			why := cacheFailure(err)
			u.add(func(cu *cache.CacheUse) { cu.Warning = why })
			notice(fmt.Sprintf("[warning] cache-from %s %s, building without it: %v", c.loc, why, err))
			continue
		}
		if len(got) == 0 { // importCaches warned: the ref does not exist
			u.add(func(cu *cache.CacheUse) { cu.Warning = "was not found" })
		}
		for _, rc := range got {
			n := 0
			if l, ok := rc.(interface{ Len() int }); ok {
				n = l.Len()
			}
			u.add(func(cu *cache.CacheUse) { cu.Records = n })
			if n == 0 {
				u.add(func(cu *cache.CacheUse) { cu.Warning = "empty" })
				notice(fmt.Sprintf("[warning] cache-from %s is empty: it holds no cache records", c.loc))
			}
			out = append(out, &meteredCache{RemoteCache: rc, use: u, st: st, local: c.loc.Dir != "", notice: notice})
		}
	}
	return out, uses, nil
}

// cacheFailure names why a cache ref could not be read.
func cacheFailure(err error) string {
	var terr *transport.Error
	var nerr net.Error
	var oerr *net.OpError
	switch {
	case errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden):
		return "is unauthorized"
	case errors.Is(err, exporter.ErrImageNotFound):
		return "was not found"
	case errors.Is(err, exporter.ErrForeignCache):
		return "is not a builder cache"
	case errors.As(err, &oerr), errors.As(err, &nerr), errors.Is(err, os.ErrPermission):
		return "is unreachable"
	}
	return "could not be read"
}

// meteredCache counts what an imported cache supplies and the time its
// fetches take. A fetch that fails for another reason than a missing key
// (the registry went away) is a warning and a miss: the step runs here.
type meteredCache struct {
	executor.RemoteCache
	use    *cacheUse
	st     *stores
	local  bool
	notice func(string)
	warned sync.Once
}

func (m *meteredCache) Fetch(ctx context.Context, key cache.Key) (*cache.Record, error) {
	start := time.Now()
	r, err := m.RemoteCache.Fetch(ctx, key)
	m.use.add(func(cu *cache.CacheUse) { cu.DurationMS += time.Since(start).Milliseconds() })
	if err != nil {
		if errors.Is(err, cache.ErrNotFound) || ctx.Err() != nil {
			return nil, err
		}
		m.warned.Do(func() {
			m.use.add(func(cu *cache.CacheUse) { cu.Warning = "failed: " + err.Error() })
			m.notice(fmt.Sprintf("[warning] cache-from %s: %v; the steps it cannot give are built here", m.Source(), err))
		})
		return nil, fmt.Errorf("%w (%v)", cache.ErrNotFound, err)
	}
	var blobBytes int64
	if m.local {
		for _, b := range r.Blobs {
			if n, err := m.st.cache.BlobSize(b); err == nil {
				blobBytes += n
			}
		}
	}
	m.use.add(func(cu *cache.CacheUse) {
		cu.Steps++
		if !r.EmptyLayer && r.DiffID != "" {
			cu.Layers++
		}
		cu.Bytes += blobBytes
	})
	return r, nil
}

// exportCachesMetered exports the build's cache to each --cache-to ref,
// counting records, layers written and skipped, bytes and time.
func exportCachesMetered(ctx context.Context, st *stores, res *executor.Result, specs []cacheSpec, ro func() exporter.RemoteOptions, notice func(string)) ([]cache.CacheUse, error) {
	var out []cache.CacheUse
	for _, c := range specs {
		if c.inline {
			continue // in the image: see inlineCache
		}
		u := &cacheUse{use: cache.CacheUse{Ref: c.loc.String(), Direction: "export"}}
		layers := 0
		if recs, err := executor.CacheRecords(ctx, st.cache, res, c.mode); err == nil {
			u.use.Records = len(recs)
			layers = distinctLayers(recs)
		}
		o := ro()
		var before map[string]bool
		if c.loc.Dir == "" {
			u.meter = newRegistryMeter()
			o = u.meter.options(o)
		} else {
			before = layoutBlobs(c.loc.Dir)
		}
		start := time.Now()
		err := exportCaches(ctx, st, res, []cacheSpec{c}, o, notice)
		u.use.DurationMS = time.Since(start).Milliseconds()
		if err != nil && c.ignoreError {
			notice(fmt.Sprintf("[warning] cache-to %s failed, ignored (ignore-error=true): %v", c.loc, err))
			u.use.Warning = "failed: " + err.Error()
			out = append(out, u.result())
			continue
		}
		if err != nil {
			return out, err
		}
		if c.loc.Dir == "" {
			u.use.Layers, u.use.LayersSkipped = u.meter.layers(repoOf(c.loc.Ref), layers)
		} else {
			u.use.Layers, u.use.LayersSkipped, u.use.Bytes = layoutWritten(c.loc, before)
		}
		out = append(out, u.result())
	}
	return out, nil
}

// layoutBlobs lists the blobs of an OCI layout directory.
func layoutBlobs(dir string) map[string]bool {
	out := map[string]bool{}
	entries, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	for _, e := range entries {
		out["sha256:"+e.Name()] = true
	}
	return out
}

// layoutWritten compares the layout's blobs with those before an export:
// the layers of the manifest loc names that are new were written, the
// others were there; bytes is the size of every new blob.
func layoutWritten(loc exporter.CacheLocation, before map[string]bool) (written, skipped int, bytes int64) {
	for d := range layoutBlobs(loc.Dir) {
		if !before[d] {
			if fi, err := os.Stat(filepath.Join(loc.Dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))); err == nil {
				bytes += fi.Size()
			}
		}
	}
	layers, err := layoutLayers(loc)
	if err != nil {
		return 0, 0, bytes
	}
	for _, d := range layers {
		if before[d] {
			skipped++
		} else {
			written++
		}
	}
	return written, skipped, bytes
}

// layoutLayers lists the layers of the manifest named loc.Tag (default
// latest) in the OCI layout loc.Dir.
func layoutLayers(loc exporter.CacheLocation) ([]string, error) {
	p, err := layout.FromPath(loc.Dir)
	if err != nil {
		return nil, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	tag := loc.Tag
	if tag == "" {
		tag = "latest"
	}
	for _, d := range im.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] != tag {
			continue
		}
		img, err := p.Image(d.Digest)
		if err != nil {
			return nil, err
		}
		m, err := img.Manifest()
		if err != nil {
			return nil, err
		}
		var out []string
		for _, l := range m.Layers {
			out = append(out, l.Digest.String())
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s has no manifest named %q", loc.Dir, tag)
}

// distinctLayers counts the layers of recs, each once.
func distinctLayers(recs []*cache.Record) int {
	seen := map[string]bool{}
	for _, r := range recs {
		if !r.EmptyLayer && r.DiffID != "" {
			seen[r.DiffID] = true
		}
	}
	return len(seen)
}

// meteredPush returns remote options that count the traffic of pushes of
// img, and a function that adds the layers pushed and skipped to each
// registry output.
func meteredPush(o exporter.RemoteOptions, img v1.Image) (exporter.RemoteOptions, func([]cache.BuildOutput)) {
	m := newRegistryMeter()
	total := 0
	if img != nil {
		if cfg, err := img.ConfigFile(); err == nil {
			seen := map[v1.Hash]bool{}
			for _, d := range cfg.RootFS.DiffIDs {
				seen[d] = true
			}
			total = len(seen)
		}
	}
	return m.options(o), func(outs []cache.BuildOutput) {
		for i := range outs {
			if outs[i].Type == "registry" {
				outs[i].LayersPushed, outs[i].LayersSkipped = m.layers(repoOf(outs[i].Name), total)
			}
		}
	}
}
