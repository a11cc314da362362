package exporter

import (
	"context"
	"fmt"
	"io"
	"os"

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
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("write local %s: layers: %w", dir, err)
	}
	for i, l := range layers {
		if err := applyLayer(ctx, dir, l); err != nil {
			return fmt.Errorf("write local %s: layer %d: %w", dir, i, err)
		}
	}
	return nil
}

func applyLayer(ctx context.Context, dir string, l v1.Layer) error {
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
	if _, err := snapshot.Apply(ctx, dir, vr); err != nil {
		return err
	}
	// Read to the end, where the stream is checked.
	if _, err := io.Copy(io.Discard, vr); err != nil {
		return err
	}
	return rc.Close()
}
