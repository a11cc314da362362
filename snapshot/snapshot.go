// Package snapshot provides root filesystem views for build steps: layers
// unpacked once into directories, writable snapshots on top of them
// (overlayfs, or a plain copy as a fallback), and the diff of a step into a
// deterministic layer tar.
//
// # Life cycle
//
// Committed layers live in a LayerStore, one directory per layer diffID, in
// overlayfs "upper" format: deletions are 0/0 character devices and opaque
// directories carry the trusted.overlay.opaque=y xattr. A layer enters the
// store either by Unpack (a layer tar from an image) or by Commit (a step's
// changes).
//
// A Snapshotter turns a chain of committed layers (bottom first) into a
// writable root:
//
//	mounts, err := sn.Prepare(ctx, "step-3", parents) // active snapshot "step-3"
//	// mount `mounts` somewhere (the RUN child mounts them inside its own
//	// mount namespace), change files, unmount
//	layer, err := sn.Commit(ctx, "step-3")           // diff → LayerStore; "step-3" is gone
//	// or: sn.Remove(ctx, "step-3")                   // discard the changes
//
// Prepare with a key that is already active fails with ErrExists. Commit and
// Remove of an unknown key fail with ErrNotFound. Close releases nothing that
// is committed; calling it twice is harmless.
package snapshot

import (
	"context"
	"errors"
)

var (
	// ErrNotFound is returned for an unknown active key or layer.
	ErrNotFound = errors.New("snapshot: not found")
	// ErrExists is returned when preparing a key that is already active.
	ErrExists = errors.New("snapshot: already exists")
)

// Mount describes one mount, containerd style: Type "overlay" with
// lowerdir/upperdir/workdir options, or "bind" with Options {"rbind","rw"}.
type Mount struct {
	Type    string
	Source  string
	Options []string
}

// Layer is a committed layer: its diffID ("sha256:<hex>", the digest of the
// uncompressed tar) and the size in bytes of that tar.
type Layer struct {
	DiffID string
	Size   int64
}

// Snapshotter prepares writable roots over committed layers and commits
// their changes as new layers. Implementations are safe for concurrent use
// by one process; several processes may share one root directory.
type Snapshotter interface {
	// Prepare creates the active snapshot key whose initial content is the
	// union of parents (layer diffIDs in the LayerStore, bottom first).
	Prepare(ctx context.Context, key string, parents []string, opts ...PrepareOption) ([]Mount, error)
	// View is Prepare for a read-only root; it must be Removed after use.
	View(ctx context.Context, key string, parents []string, opts ...PrepareOption) ([]Mount, error)
	// Commit diffs the active snapshot key against its parents, stores the
	// result in the LayerStore and removes the active snapshot.
	Commit(ctx context.Context, key string, opts ...DiffOption) (Layer, error)
	// Remove discards an active snapshot or view.
	Remove(ctx context.Context, key string) error
	// Close releases resources held by the snapshotter.
	Close() error
}

// UpperDirer is a Snapshotter whose active snapshots keep their changes in
// a directory of their own (overlayfs's upper directory). While the
// snapshot is not mounted, a directory made in it through its mount holds
// nothing from the parents and may be filled there directly, without the
// mount's cost per file.
type UpperDirer interface {
	// UpperDir returns the directory that holds the changes of the active
	// snapshot key.
	UpperDir(ctx context.Context, key string) (string, error)
}
