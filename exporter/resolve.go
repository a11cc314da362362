package exporter

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/builder-dev/builder/cache"
)

// looksLikeDigest reports whether s is "sha256:<hex…>" or bare hex of at
// least 4 digits, i.e. a digest or a digest prefix.
func looksLikeDigest(s string) bool {
	h := strings.TrimPrefix(s, "sha256:")
	if len(h) < 4 || len(h) > 64 {
		return false
	}
	return strings.Trim(h, "0123456789abcdef") == ""
}

// resolve returns the manifest digest ref names. Tags win over digest
// prefixes, as in docker.
func (s *Store) resolve(ctx context.Context, ref string) (string, error) {
	if strings.Contains(ref, "@") {
		d, err := name.NewDigest(ref, name.WeakValidation)
		if err != nil {
			return "", fmt.Errorf("parse reference %q: %w", ref, err)
		}
		return s.exactDigest(ref, d.DigestStr())
	}
	if strings.HasPrefix(ref, "sha256:") && len(ref) == 71 {
		return s.exactDigest(ref, ref)
	}
	if n, err := parseTag(ref); err == nil {
		d, err := s.blobs.ResolveTag(ctx, n.Full())
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, cache.ErrNotFound) || !looksLikeDigest(ref) {
			return "", fmt.Errorf("image %s: %w", ref, err)
		}
	}
	if !looksLikeDigest(ref) {
		return "", fmt.Errorf("image %q: invalid reference", ref)
	}
	return s.prefix(ctx, ref)
}

func (s *Store) exactDigest(ref, digest string) (string, error) {
	if !s.blobs.HasBlob(digest) {
		return "", fmt.Errorf("image %s: %w", ref, cache.ErrNotFound)
	}
	return digest, nil
}

// prefix finds the one tagged image whose manifest or config digest starts
// with ref.
func (s *Store) prefix(ctx context.Context, ref string) (string, error) {
	sums, _, err := s.summaries(ctx)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", ref, err)
	}
	want := "sha256:" + strings.TrimPrefix(ref, "sha256:")
	var found []string
	for d, sum := range sums {
		if strings.HasPrefix(d, want) || (sum.ConfigDigest != "" && strings.HasPrefix(sum.ConfigDigest, want)) {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("image %s: %w", ref, cache.ErrNotFound)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("image %s: ambiguous digest prefix (%d images)", ref, len(found))
}
