package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/builder-dev/builder/snapshot"
)

// WriteLocal writes the final root filesystem of img into dir (created if
// missing) by applying each layer in order with full-root whiteout
// semantics. Nothing outside dir is written.
func WriteLocal(ctx context.Context, dir string, img v1.Image) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write local %s: %w", dir, err)
	}
	return writeLocal(ctx, dir, img)
}

// WriteLocalOutput is WriteLocal for a -o type=local output into dest
// (its subdirectory sub, a platform's, when sub is not ""), as BuildKit's
// client receives one: dest, when missing, is made 0700 (with any missing
// parent), and every file is owned by the calling user (session/filesync
// gives each the caller's uid and gid), modes and times the image's.
func WriteLocalOutput(ctx context.Context, dest, sub string, img v1.Image) error {
	if err := os.MkdirAll(dest, 0o700); err != nil {
		return fmt.Errorf("write local %s: %w", dest, err)
	}
	dir := dest
	if sub != "" {
		dir = filepath.Join(dest, sub)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write local %s: %w", dir, err)
		}
	}
	return writeLocal(ctx, dir, img, snapshot.WithNoSameOwner())
}

func writeLocal(ctx context.Context, dir string, img v1.Image, opts ...snapshot.ApplyOption) error {
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("write local %s: layers: %w", dir, err)
	}
	return applyLayers(ctx, dir, layers, opts...)
}

// applyLayers applies layers in order into dir.
func applyLayers(ctx context.Context, dir string, layers []v1.Layer, opts ...snapshot.ApplyOption) error {
	for i, l := range layers {
		if err := applyLayer(ctx, dir, l, opts); err != nil {
			return fmt.Errorf("write %s: layer %d: %w", dir, i, err)
		}
	}
	return nil
}

func applyLayer(ctx context.Context, dir string, l v1.Layer, opts []snapshot.ApplyOption) error {
	diffID, err := l.DiffID()
	if err != nil {
		return err
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	var vr io.Reader = rc
	if _, ok := l.(interface{ verified() }); !ok {
		vr = newVerifyReader(rc, diffID, -1, "layer "+diffID.String())
	}
	if _, err := snapshot.Apply(ctx, dir, vr, opts...); err != nil {
		return err
	}
	// Read to the end, where the stream is checked.
	if _, err := io.Copy(io.Discard, vr); err != nil {
		return err
	}
	return rc.Close()
}
