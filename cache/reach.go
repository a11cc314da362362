package cache

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
)

// reachable is what the tagged images of the index need: every blob
// (manifests, configs, layers) and every layer diffID.
type reachable struct {
	blobs   map[string]bool
	diffIDs map[string]bool
	images  map[string]bool // tagged digests
}

// manifestDoc covers both an image manifest and an index/manifest list.
type manifestDoc struct {
	Manifests []descriptor `json:"manifests"`
	Config    *descriptor  `json:"config"`
	Layers    []descriptor `json:"layers"`
}

type configDoc struct {
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// reachableFromTags walks every tagged manifest. Missing or corrupt blobs
// are skipped: they protect nothing, and Prune must still make progress.
func (s *Store) reachableFromTags(ctx context.Context) (*reachable, error) {
	r := &reachable{blobs: map[string]bool{}, diffIDs: map[string]bool{}, images: map[string]bool{}}
	tags, err := s.Tags(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range tags {
		r.images[t.Digest] = true
		if err := s.walkManifest(ctx, r, t.Digest, 0); err != nil {
			return nil, err
		}
		if idx := s.AttestationIndex(t.Digest); idx != "" {
			if err := s.walkManifest(ctx, r, idx, 0); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

// maxIndexDepth bounds nested indexes, so a cycle cannot loop forever.
const maxIndexDepth = 8

func (s *Store) walkManifest(ctx context.Context, r *reachable, digest string, depth int) error {
	if r.blobs[digest] || depth > maxIndexDepth {
		return nil
	}
	r.blobs[digest] = true
	var m manifestDoc
	if ok, err := s.readJSONBlob(ctx, digest, &m); !ok {
		return err
	}
	for _, d := range m.Manifests {
		if err := s.walkManifest(ctx, r, d.Digest, depth+1); err != nil {
			return err
		}
	}
	for _, l := range m.Layers {
		r.blobs[l.Digest] = true
	}
	if m.Config == nil {
		return nil
	}
	r.blobs[m.Config.Digest] = true
	var c configDoc
	if ok, err := s.readJSONBlob(ctx, m.Config.Digest, &c); !ok {
		return err
	}
	for _, d := range c.RootFS.DiffIDs {
		r.diffIDs[d] = true
	}
	return nil
}

// readJSONBlob decodes a blob into v. It reports false with a nil error for
// a blob that is missing, corrupt or not JSON, and false with the error for
// anything else (I/O errors, cancellation).
func (s *Store) readJSONBlob(ctx context.Context, digest string, v any) (bool, error) {
	data, err := s.ReadBlob(ctx, digest)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return json.Unmarshal(data, v) == nil, nil
}

// AttestationIndex is the digest of the index that holds the image
// digest names and its attestations (the Attestations area), "" if the
// image has none.
func (s *Store) AttestationIndex(digest string) string {
	hex, err := parseDigest(digest)
	if err != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(s.AreaPath(Attestations), hex))
	if err != nil {
		return ""
	}
	idx := strings.TrimSpace(string(b))
	if _, err := parseDigest(idx); err != nil {
		return ""
	}
	return idx
}
