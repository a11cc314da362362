package exporter

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Import stores an image read from outside the store (an OCI layout of a
// named build context) as Load stores an archive's: every layer verified
// and unpacked, then config and manifest, without a tag. It returns the
// manifest digest.
func (s *Store) Import(ctx context.Context, img v1.Image) (v1.Hash, error) {
	return s.importImage(ctx, img, nil, nil)
}
