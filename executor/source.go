package executor

import (
	"context"
	"fmt"
	"os"

	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/planner"
)

// fileSource is a planner.Source as a step reads it: a directory context
// (the build context or a named one, with its own .dockerignore), or the
// layers of a stage or an image (none: scratch).
type fileSource struct {
	// dir is the directory context; nil with layered, and for a build
	// without a context.
	dir     *buildcontext.Context
	layered bool
	layers  []layerRef
	// key names a directory context in RUN --mount keys: "context:NAME"
	// ("" for the build context).
	key string
}

// resolveSource finds what src reads; nil is the build context. A stage
// is built (if nobody did yet) and waited for.
func (b *build) resolveSource(ctx context.Context, src *planner.Source) (fileSource, error) {
	switch {
	case src == nil:
		return fileSource{dir: b.e.opts.Context}, nil
	case src.Context != nil:
		c, err := openNamedContext(src.Context)
		return fileSource{dir: c, key: "context:" + src.Context.Name}, err
	case src.Stage != nil:
		s, err := b.result(ctx, src.Stage.Index)
		if err != nil {
			return fileSource{}, err
		}
		return fileSource{layered: true, layers: s.layers}, nil
	case src.Image != nil:
		s, err := b.imageState(ctx, src.Image.Digest)
		if err != nil {
			return fileSource{}, fmt.Errorf("image %s: %w", src.Image.Ref, err)
		}
		return fileSource{layered: true, layers: s.layers}, nil
	}
	return fileSource{layered: true}, nil
}

// readsLayers reports whether src is a stage, an image or scratch: files
// that a step reading them is keyed by the identity of (sourceID) before
// it reads them.
func readsLayers(src *planner.Source) bool {
	return src != nil && src.Context == nil
}

// sourceID names a stage, an image or scratch in the input key of a step
// that reads it: the stage's input key (known before it is built), the
// image's digest.
func (b *build) sourceID(ctx context.Context, src *planner.Source) (string, error) {
	switch {
	case src.Stage != nil:
		sk, err := b.stageKeys(ctx, src.Stage.Index)
		if err != nil {
			return "", err
		}
		return "stage " + stageName(src.Stage) + "@" + sk.state.key.String(), nil
	case src.Image != nil:
		return "image " + src.Image.Ref + "@" + src.Image.Digest, nil
	}
	return "scratch", nil
}

// stageReads lists the stage src is, for a step that builds it on a miss.
func stageReads(src *planner.Source) []int {
	if src != nil && src.Stage != nil {
		return []int{src.Stage.Index}
	}
	return nil
}

// withSource calls fn with the source's directory context, or with the
// root of a read-only view of its layers while it is mounted.
func (b *build) withSource(ctx context.Context, src fileSource, fn func(dir *buildcontext.Context, root string) error) error {
	if !src.layered {
		return fn(src.dir, "")
	}
	return b.withLayers(ctx, src.layers, func(root string) error { return fn(nil, root) })
}

// readFrom points a COPY selection at a directory context (hashed through
// the store's memo) or at the root of a stage's or image's files.
func (b *build) readFrom(req *copyRequest, dir *buildcontext.Context, root string) {
	if root == "" {
		req.Context, req.Hash = dir, b.e.opts.Cache.HashFileMeta
		return
	}
	req.SrcRoot = root
}

// withLayers mounts a read-only view of layers and calls fn with its
// root; no layers (scratch) is an empty directory.
func (b *build) withLayers(ctx context.Context, layers []layerRef, fn func(root string) error) (err error) {
	if len(layers) == 0 {
		dir, err := os.MkdirTemp(b.e.opts.TempDir, "scratch-")
		if err != nil {
			return err
		}
		defer os.Remove(dir)
		return fn(dir)
	}
	if err := b.ensureLayers(ctx, layers); err != nil {
		return err
	}
	ids := make([]string, len(layers))
	for i, l := range layers {
		ids[i] = l.diffID
	}
	key := "view-" + b.activeKey()
	mounts, err := b.e.opts.Snapshotter.View(ctx, key, ids, layersOptions(layers)...)
	if err != nil {
		return fmt.Errorf("prepare view: %w", err)
	}
	defer func() {
		if rerr := b.e.opts.Snapshotter.Remove(context.WithoutCancel(ctx), key); rerr != nil && err == nil {
			err = rerr
		}
	}()
	return b.withMounted(ctx, mounts, fn)
}
