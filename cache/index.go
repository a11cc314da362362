package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sys/unix"
)

const (
	// AnnotationRefName holds a tag's full name in images/index.json.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationCreated holds the time the tag was set (RFC 3339).
	AnnotationCreated = "org.opencontainers.image.created"

	mediaTypeOCIIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeOCIManifest = "application/vnd.oci.image.manifest.v1+json"
	indexFile            = "index.json"
)

// Tag is one entry of the local image index.
type Tag struct {
	Name    string    // full name, e.g. "docker.io/library/app:v1"
	Digest  string    // manifest (or index) digest
	Created time.Time // when the tag was last set
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type ociIndex struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

// NormalizeName returns the full name the index stores for a tag reference:
// "app:v1" and "docker.io/library/app:v1" both give
// "docker.io/library/app:v1"; a missing tag means "latest". Digest
// references are rejected.
func NormalizeName(ref string) (string, error) {
	if strings.Contains(ref, "@") {
		return "", fmt.Errorf("cache: invalid tag %q: digest references cannot be tagged", ref)
	}
	t, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("cache: invalid tag %q: %w", ref, err)
	}
	reg := t.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + t.RepositoryStr() + ":" + t.TagStr(), nil
}

// FamiliarName shortens a full name the way the docker CLI shows it:
// "docker.io/library/app:v1" → "app:v1", "docker.io/me/app:v1" → "me/app:v1".
func FamiliarName(full string) string {
	if s, ok := strings.CutPrefix(full, "docker.io/library/"); ok && !strings.Contains(s, "/") {
		return s
	}
	if s, ok := strings.CutPrefix(full, "docker.io/"); ok {
		return s
	}
	return full
}

// SetTag points name at the manifest digest, which must already be stored
// as a blob. The index is rewritten under an exclusive lock, so concurrent
// SetTag calls from any number of processes never lose a tag.
func (s *Store) SetTag(ctx context.Context, ref, digest string) error {
	full, err := NormalizeName(ref)
	if err != nil {
		return err
	}
	desc, err := s.manifestDescriptor(ctx, digest)
	if err != nil {
		return fmt.Errorf("tag %s: %w", full, err)
	}
	desc.Annotations = map[string]string{
		AnnotationRefName: full,
		AnnotationCreated: time.Now().UTC().Format(time.RFC3339Nano),
	}
	return s.updateIndex(ctx, func(idx *ociIndex) error {
		idx.Manifests = append(withoutName(idx.Manifests, full), desc)
		return nil
	})
}

// ResolveTag returns the digest that name points at, or ErrNotFound.
func (s *Store) ResolveTag(ctx context.Context, ref string) (string, error) {
	full, err := NormalizeName(ref)
	if err != nil {
		return "", err
	}
	idx, err := s.readIndex(ctx)
	if err != nil {
		return "", err
	}
	for _, d := range idx.Manifests {
		if d.Annotations[AnnotationRefName] == full {
			return d.Digest, nil
		}
	}
	return "", fmt.Errorf("resolve tag %s: %w", full, ErrNotFound)
}

// Tags lists the index, sorted by name.
func (s *Store) Tags(ctx context.Context) ([]Tag, error) {
	idx, err := s.readIndex(ctx)
	if err != nil {
		return nil, err
	}
	tags := make([]Tag, 0, len(idx.Manifests))
	for _, d := range idx.Manifests {
		n := d.Annotations[AnnotationRefName]
		if n == "" {
			continue
		}
		created, _ := time.Parse(time.RFC3339Nano, d.Annotations[AnnotationCreated])
		tags = append(tags, Tag{Name: n, Digest: d.Digest, Created: created})
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i].Name < tags[j].Name })
	return tags, nil
}

// RemoveTag deletes name from the index, or returns ErrNotFound. The
// image's blobs stay until Prune.
func (s *Store) RemoveTag(ctx context.Context, ref string) error {
	full, err := NormalizeName(ref)
	if err != nil {
		return err
	}
	return s.updateIndex(ctx, func(idx *ociIndex) error {
		kept := withoutName(idx.Manifests, full)
		if len(kept) == len(idx.Manifests) {
			return fmt.Errorf("remove tag %s: %w", full, ErrNotFound)
		}
		idx.Manifests = kept
		return nil
	})
}

func withoutName(ds []descriptor, full string) []descriptor {
	out := make([]descriptor, 0, len(ds))
	for _, d := range ds {
		if d.Annotations[AnnotationRefName] != full {
			out = append(out, d)
		}
	}
	return out
}

// manifestDescriptor describes a stored manifest blob, taking the media type
// from the manifest itself.
func (s *Store) manifestDescriptor(ctx context.Context, digest string) (descriptor, error) {
	data, err := s.ReadBlob(ctx, digest)
	if err != nil {
		return descriptor{}, err
	}
	var m struct {
		MediaType string `json:"mediaType"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return descriptor{}, fmt.Errorf("manifest %s: %w", digest, err)
	}
	if m.MediaType == "" {
		m.MediaType = mediaTypeOCIManifest
	}
	return descriptor{MediaType: m.MediaType, Digest: digest, Size: int64(len(data))}, nil
}

func (s *Store) indexPath() string { return filepath.Join(s.images, indexFile) }

// The index has a copy, images/index.json.bak, rewritten after each update
// (not synced: it is only a copy), so a damaged or deleted index.json
// loses no tag: RepairIndex rebuilds it from what is left of both and from
// the build records.
const indexBackup = indexFile + ".bak"

func (s *Store) indexBackupPath() string { return filepath.Join(s.images, indexBackup) }

// IndexError says that images/index.json is damaged or missing while its
// copy is there. errors.Is(err, ErrCorrupt) is true.
type IndexError struct {
	Path   string
	Reason string
}

func (e *IndexError) Error() string {
	return fmt.Sprintf("image index %s is damaged (%s): the tags cannot be read; run builder fsck --repair to rebuild it from what is left (its copy %s and the build records)", e.Path, e.Reason, indexBackup)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *IndexError) Is(target error) bool { return target == ErrCorrupt }

func (s *Store) readIndex(ctx context.Context) (*ociIndex, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(s.indexPath())
	if errors.Is(err, os.ErrNotExist) {
		// No index: a store that never had a tag, unless its copy says
		// otherwise (then the tags must not silently vanish: prune would
		// free every image).
		if bak, err := os.ReadFile(s.indexBackupPath()); err == nil {
			if idx, err := decodeIndex(bak); err != nil || len(idx.Manifests) > 0 {
				return nil, &IndexError{Path: s.indexPath(), Reason: "deleted"}
			}
		}
		return &ociIndex{SchemaVersion: 2, MediaType: mediaTypeOCIIndex}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read image index: %w", err)
	}
	idx, err := decodeIndex(data)
	if err != nil {
		return nil, &IndexError{Path: s.indexPath(), Reason: err.Error()}
	}
	return idx, nil
}

// decodeIndex decodes and checks an index: valid UTF-8 (a flipped byte
// inside a string still decodes), and every entry with a valid digest and
// a tag name in its normal form.
func decodeIndex(data []byte) (*ociIndex, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("not valid UTF-8")
	}
	idx := &ociIndex{SchemaVersion: 2, MediaType: mediaTypeOCIIndex}
	if err := json.Unmarshal(data, idx); err != nil {
		return nil, err
	}
	for i, d := range idx.Manifests {
		if err := checkIndexEntry(d); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
	}
	return idx, nil
}

func checkIndexEntry(d descriptor) error {
	if _, err := parseDigest(d.Digest); err != nil {
		return err
	}
	strs := []string{d.MediaType}
	for k, v := range d.Annotations {
		strs = append(strs, k, v)
	}
	if !validStrings(strs...) {
		return errors.New("not valid UTF-8")
	}
	if n, ok := d.Annotations[AnnotationRefName]; ok {
		if full, err := NormalizeName(n); err != nil || full != n {
			return fmt.Errorf("invalid tag name %q", n)
		}
	}
	return nil
}

// updateIndex runs fn on the current index and writes the result, all under
// an exclusive flock on images/index.lock.
func (s *Store) updateIndex(ctx context.Context, fn func(*ociIndex) error) error {
	select {
	case s.indexSem <- struct{}{}:
		defer func() { <-s.indexSem }()
	case <-ctx.Done():
		return fmt.Errorf("lock image index: %w", ctx.Err())
	}
	unlock, err := flockPath(ctx, filepath.Join(s.images, "index.lock"), unix.LOCK_EX)
	if err != nil {
		return fmt.Errorf("lock image index: %w", err)
	}
	defer unlock()
	idx, err := s.readIndex(ctx)
	if err != nil {
		return err
	}
	if err := fn(idx); err != nil {
		return err
	}
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("write image index: %w", err)
	}
	return s.writeIndex(ctx, data)
}

// writeIndex writes the index, then its copy.
func (s *Store) writeIndex(ctx context.Context, data []byte) error {
	if err := s.writeFileAtomic(ctx, s.images, indexFile, data); err != nil {
		return fmt.Errorf("write image index: %w", err)
	}
	if err := s.writeFile(ctx, s.images, indexBackup, data, bestEffort); err != nil {
		return fmt.Errorf("write image index copy: %w", err)
	}
	return nil
}
