package executor

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/snapshot"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The fakes below run the executor without root, mounts or a sandbox:
// snapshots are plain directories handed over by rename, layers are the
// files a step changed, and RUN understands a few shell-like commands.

// fakeCache is an in-memory CacheStore.
type fakeCache struct {
	dir     string
	mu      sync.Mutex
	records map[cache.Key]*cache.Record
	builds  map[string]*cache.BuildRecord
	lookups int
}

func newFakeCache(t *testing.T) *fakeCache {
	return &fakeCache{dir: t.TempDir(), records: map[cache.Key]*cache.Record{}, builds: map[string]*cache.BuildRecord{}}
}

func (c *fakeCache) Lookup(_ context.Context, k cache.Key) (*cache.Record, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lookups++
	r, ok := c.records[k]
	if !ok {
		return nil, fmt.Errorf("key %s: %w", k, cache.ErrNotFound)
	}
	cp := *r
	return &cp, nil
}

func (c *fakeCache) Put(_ context.Context, r *cache.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := *r
	c.records[r.Key] = &cp
	return nil
}

func (c *fakeCache) LatestBuild(_ context.Context, project string) (*cache.BuildRecord, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.builds[project]; ok {
		return r, nil
	}
	return nil, cache.ErrNotFound
}

// ReadInputs: the fake keeps every record's inputs inline.
func (c *fakeCache) ReadInputs(_ context.Context, digest string) (*cache.Inputs, error) {
	return nil, fmt.Errorf("inputs %s: %w", digest, cache.ErrNotFound)
}

func (c *fakeCache) HashFileMeta(_ context.Context, path string, _ os.FileInfo) (cache.FileSum, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return cache.FileSum{}, err
	}
	sum := sha256.Sum256(data)
	return cache.FileSum{Digest: "sha256:" + hex.EncodeToString(sum[:])}, nil
}

func (c *fakeCache) Dir(a cache.Area) (string, error) {
	p := c.AreaPath(a)
	return p, os.MkdirAll(p, 0o755)
}

func (c *fakeCache) AreaPath(a cache.Area) string { return filepath.Join(c.dir, string(a)) }

func (c *fakeCache) WriteAreaFile(_ context.Context, a cache.Area, name string, data []byte) error {
	p, err := c.Dir(a)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(p, name), data, 0o644)
}

// fakeLayers holds layers as directories of the files they add, by diffID.
type fakeLayers struct {
	dir string
	mu  sync.Mutex
	has map[string]string // diffID → directory
	// unpacked counts the base image layers unpacked.
	unpacked int
}

func newFakeLayers(t *testing.T) *fakeLayers {
	return &fakeLayers{dir: t.TempDir(), has: map[string]string{}}
}

func (l *fakeLayers) Has(diffID string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.has[diffID]
	return ok
}

// Unpack writes the regular files of a base image layer's tar.
func (l *fakeLayers) Unpack(_ context.Context, diffID string, r io.Reader) (snapshot.Layer, error) {
	dir := filepath.Join(l.dir, "unpacked-"+strings.TrimPrefix(diffID, "sha256:"))
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return snapshot.Layer{}, err
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		p := filepath.Join(dir, filepath.Clean("/"+hdr.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return snapshot.Layer{}, err
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return snapshot.Layer{}, err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return snapshot.Layer{}, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return snapshot.Layer{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.has[diffID] = dir
	l.unpacked++
	return snapshot.Layer{DiffID: diffID}, nil
}

func (l *fakeLayers) unpacks() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unpacked
}

func (l *fakeLayers) path(diffID string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.has[diffID]
	return p, ok
}

// forget drops a layer, as a pruned store would.
func (l *fakeLayers) forget(diffID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.has, diffID)
}

// fakeSnapshotter makes a snapshot by copying its parents' files into a
// directory; Commit stores the files that differ from the parents.
type fakeSnapshotter struct {
	layers *fakeLayers
	dir    string
	mu     sync.Mutex
	active map[string]map[string]string // key → the parents' files (path → content)
	// views counts the read-only views made (a stage's files read).
	views int
	// windows lists, in order, "prepare KEY [WHICH]" and "commit KEY" of
	// the snapshots made over Windows layers (snapshot.WithWindowsLayers:
	// WHICH) and committed in the Windows format.
	windows []string
}

func newFakeSnapshotter(t *testing.T, l *fakeLayers) *fakeSnapshotter {
	return &fakeSnapshotter{layers: l, dir: t.TempDir(), active: map[string]map[string]string{}}
}

func (s *fakeSnapshotter) Prepare(_ context.Context, key string, parents []string, opts ...snapshot.PrepareOption) ([]snapshot.Mount, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var o snapshot.PrepareOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.Windows != nil {
		s.windows = append(s.windows, fmt.Sprintf("prepare %s %v", key, o.Windows))
	}
	if _, ok := s.active[key]; ok {
		return nil, snapshot.ErrExists
	}
	dir := filepath.Join(s.dir, key)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	for _, p := range parents {
		src, ok := s.layers.path(p)
		if !ok {
			return nil, fmt.Errorf("parent %s: %w", p, snapshot.ErrNotFound)
		}
		if err := os.CopyFS(dir, os.DirFS(src)); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
	}
	files, err := readTree(dir)
	if err != nil {
		return nil, err
	}
	s.active[key] = files
	return []snapshot.Mount{{Type: "fake", Source: dir}}, nil
}

func (s *fakeSnapshotter) View(ctx context.Context, key string, parents []string, opts ...snapshot.PrepareOption) ([]snapshot.Mount, error) {
	s.mu.Lock()
	s.views++
	s.mu.Unlock()
	return s.Prepare(ctx, key, parents, opts...)
}

// windowsUse returns and forgets the Windows snapshots listed, with the
// keys' build-specific part left out: "prepare [WHICH]", "commit",
// "prepare view [WHICH]".
func (s *fakeSnapshotter) windowsUse() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.windows))
	for i, w := range s.windows {
		op, rest, _ := strings.Cut(w, " ")
		key, which, _ := strings.Cut(rest, " ")
		if strings.HasPrefix(key, "view-") {
			op += " view"
		}
		out[i] = strings.TrimSpace(op + " " + which)
	}
	s.windows = nil
	return out
}

func (s *fakeSnapshotter) viewCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.views
}

func (s *fakeSnapshotter) Commit(_ context.Context, key string, opts ...snapshot.DiffOption) (snapshot.Layer, error) {
	s.mu.Lock()
	var o snapshot.DiffOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.Windows {
		s.windows = append(s.windows, "commit "+key)
	}
	before, ok := s.active[key]
	delete(s.active, key)
	s.mu.Unlock()
	if !ok {
		return snapshot.Layer{}, snapshot.ErrNotFound
	}
	dir := filepath.Join(s.dir, key)
	after, err := readTree(dir)
	if err != nil {
		return snapshot.Layer{}, err
	}
	h := sha256.New()
	var changed []string
	for p, c := range after {
		if before[p] != c {
			changed = append(changed, p)
		}
	}
	sort.Strings(changed)
	out := filepath.Join(s.layers.dir, key)
	for _, p := range changed {
		fmt.Fprintf(h, "%s\x00%s\x00", p, after[p])
		if err := os.MkdirAll(filepath.Dir(filepath.Join(out, p)), 0o755); err != nil {
			return snapshot.Layer{}, err
		}
		if err := os.WriteFile(filepath.Join(out, p), []byte(after[p]), 0o644); err != nil {
			return snapshot.Layer{}, err
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return snapshot.Layer{}, err
	}
	diffID := "sha256:" + hex.EncodeToString(h.Sum(nil))
	s.layers.mu.Lock()
	s.layers.has[diffID] = out
	s.layers.mu.Unlock()
	return snapshot.Layer{DiffID: diffID, Size: int64(len(changed))}, os.RemoveAll(dir)
}

func (s *fakeSnapshotter) Remove(_ context.Context, key string) error {
	s.mu.Lock()
	delete(s.active, key)
	s.mu.Unlock()
	return os.RemoveAll(filepath.Join(s.dir, key))
}

func (s *fakeSnapshotter) Close() error { return nil }

// readTree returns the regular files below dir with their content.
func readTree(dir string) (map[string]string, error) {
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = string(data)
		return err
	})
	return files, err
}

// fakeMounter "mounts" a fake snapshot by renaming its directory onto the
// (empty) target and back.
type fakeMounter struct {
	mu     sync.Mutex
	source map[string]string // target → snapshot directory
}

func (m *fakeMounter) Mount(mt snapshot.Mount, target string) error {
	if mt.Type != "fake" {
		return fmt.Errorf("fakeMounter: mount type %q", mt.Type)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.source == nil {
		m.source = map[string]string{}
	}
	m.source[target] = mt.Source
	if err := os.Remove(target); err != nil {
		return err
	}
	return os.Rename(mt.Source, target)
}

func (m *fakeMounter) Unmount(target string) error {
	m.mu.Lock()
	src, ok := m.source[target]
	delete(m.source, target)
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("fakeMounter: %s is not mounted", target)
	}
	if err := os.Rename(target, src); err != nil {
		return err
	}
	return os.Mkdir(target, 0o700)
}

// fakeSandbox runs RUN's command line as a tiny shell: "echo TEXT >
// /PATH" writes a file, "exit N" fails with status N, "sleep-until NAME"
// waits until another RUN ran "signal NAME"; anything else only prints.
type fakeSandbox struct {
	mu      sync.Mutex
	ran     []string
	signals map[string]chan struct{}
}

func (f *fakeSandbox) signal(name string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.signals == nil {
		f.signals = map[string]chan struct{}{}
	}
	if f.signals[name] == nil {
		f.signals[name] = make(chan struct{})
	}
	return f.signals[name]
}

func (f *fakeSandbox) Run(ctx context.Context, spec sandbox.Spec) error {
	cmd := spec.Args[len(spec.Args)-1]
	f.mu.Lock()
	f.ran = append(f.ran, cmd)
	f.mu.Unlock()
	root := spec.Mounts[0].Source
	switch fields := strings.Fields(cmd); {
	case len(fields) == 4 && fields[0] == "echo" && fields[2] == ">":
		p := filepath.Join(root, fields[3])
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, []byte(fields[1]+"\n"), 0o644)
	case len(fields) == 2 && fields[0] == "exit":
		code, _ := strconv.Atoi(fields[1])
		fmt.Fprintln(spec.Stderr, "failing on purpose")
		return &sandbox.ExitError{Code: code}
	case len(fields) == 2 && fields[0] == "signal":
		close(f.signal(fields[1]))
	case len(fields) == 2 && fields[0] == "sleep-until":
		select {
		case <-f.signal(fields[1]):
		case <-ctx.Done():
			return ctx.Err()
		}
	default:
		fmt.Fprintln(spec.Stdout, cmd)
	}
	return nil
}

func (f *fakeSandbox) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ran...)
}

// fakeImages is an ImageStore over the fake layers.
type fakeImages struct {
	images map[string]v1.Image
}

func (i fakeImages) Image(_ context.Context, ref string) (v1.Image, error) {
	if img, ok := i.images[ref]; ok {
		return img, nil
	}
	return nil, fmt.Errorf("image %s not found", ref)
}

func (fakeImages) StoredLayer(diffID string, size int64) (v1.Layer, error) {
	h, err := v1.NewHash(diffID)
	return fakeLayer{diffID: h, size: size}, err
}

// storedAt is when fakeImages got every image.
var storedAt = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func (fakeImages) StoredAt(string) (time.Time, error) { return storedAt, nil }

func (fakeImages) NewImage(raw []byte, layers []v1.Layer) (v1.Image, error) {
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	return &fakeImage{raw: raw, cfg: cfg, layers: layers}, nil
}

// fakeImage is the part of an image the tests read: config and layers.
type fakeImage struct {
	v1.Image
	raw    []byte
	cfg    *v1.ConfigFile
	layers []v1.Layer
}

func (i *fakeImage) RawConfigFile() ([]byte, error)      { return i.raw, nil }
func (i *fakeImage) ConfigFile() (*v1.ConfigFile, error) { return i.cfg, nil }
func (i *fakeImage) Layers() ([]v1.Layer, error)         { return i.layers, nil }

// fakeLayer is a layer known by its diffID.
type fakeLayer struct {
	v1.Layer
	diffID v1.Hash
	size   int64
}

func (l fakeLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l fakeLayer) Size() (int64, error)                { return l.size, nil }
func (l fakeLayer) MediaType() (types.MediaType, error) { return types.OCIUncompressedLayer, nil }
