package executor

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/snapshot"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The executor depends on what it uses of its stores, declared here by the
// consumer (cache.Store, snapshot.LayerStore and exporter.Store implement
// them), so that a build can be run against fakes.

// CacheStore is the part of cache.Store the executor uses: records by key,
// the previous build of a project, the context hash memo and the areas of
// RUN cache mounts and ADD URL validators.
type CacheStore interface {
	recordLookup
	Put(ctx context.Context, rec *cache.Record) error
	LatestBuild(ctx context.Context, project string) (*cache.BuildRecord, error)
	// ReadInputs reads the inputs a record stored as a blob
	// (Record.InputsDigest): they explain misses.
	ReadInputs(ctx context.Context, digest string) (*cache.Inputs, error)
	HashFileMeta(ctx context.Context, path string, fi os.FileInfo) (cache.FileSum, error)
	// Dir returns an area of the store, created if missing.
	Dir(a cache.Area) (string, error)
	// AreaPath returns an area's path without creating it.
	AreaPath(a cache.Area) string
	WriteAreaFile(ctx context.Context, a cache.Area, name string, data []byte) error
}

// recordLookup reads cache records by key.
type recordLookup interface {
	Lookup(ctx context.Context, k cache.Key) (*cache.Record, error)
}

// LayerStore is the part of snapshot.LayerStore the executor uses: base
// image layers unpacked once for snapshots.
type LayerStore interface {
	Has(diffID string) bool
	Unpack(ctx context.Context, diffID string, r io.Reader) (snapshot.Layer, error)
}

// ImageSource resolves image references (name:tag or digest) in the local
// image store.
type ImageSource interface {
	Image(ctx context.Context, ref string) (v1.Image, error)
}

// ImageStore is the local image store as the executor uses it
// (exporter.Store): base images by reference, the layers this build made
// read back from the layer store, and the assembly of the result.
type ImageStore interface {
	ImageSource
	// StoredLayer is a layer of the layer store (or one imported from a
	// remote cache, read from its kept blob). Its bytes are produced when
	// the image is exported, after Run returned: it is not bound to the
	// build's context.
	StoredLayer(diffID string, size int64) (v1.Layer, error)
	// StoredAt returns when the store got the image whose manifest has
	// digest: BuildKit dates a base image layer that has no history
	// entry by when it pulled it.
	StoredAt(digest string) (time.Time, error)
	// NewImage assembles an image from its raw config and layers.
	NewImage(rawConfig []byte, layers []v1.Layer) (v1.Image, error)
}

// Mounter mounts a snapshot's mounts on a directory and unmounts them.
type Mounter interface {
	Mount(m snapshot.Mount, target string) error
	Unmount(target string) error
}

// Sandbox runs the process of a RUN step (internal/sandbox).
type Sandbox interface {
	Run(ctx context.Context, spec sandbox.Spec) error
}

// kernelMounts mounts with the kernel's mount(2) (snapshot.Mount).
type kernelMounts struct{}

func (kernelMounts) Mount(m snapshot.Mount, target string) error { return m.Mount(target) }
func (kernelMounts) Unmount(target string) error                 { return snapshot.Unmount(target) }

// processSandbox runs RUN in internal/sandbox's namespaces.
type processSandbox struct{}

func (processSandbox) Run(ctx context.Context, spec sandbox.Spec) error {
	return sandbox.Run(ctx, spec)
}
