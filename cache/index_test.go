package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"app":                             "docker.io/library/app:latest",
		"app:v1":                          "docker.io/library/app:v1",
		"me/app:v1":                       "docker.io/me/app:v1",
		"docker.io/library/app:v1":        "docker.io/library/app:v1",
		"index.docker.io/library/app:v1":  "docker.io/library/app:v1",
		"localhost:5000/app":              "localhost:5000/app:latest",
		"registry.example.com/a/b/c:tag1": "registry.example.com/a/b/c:tag1",
	} {
		got, err := NormalizeName(in)
		if err != nil || got != want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", in, got, err, want)
		}
		if f := FamiliarName(want); in == "app:v1" && f != "app:v1" {
			t.Errorf("FamiliarName(%q) = %q", want, f)
		}
	}
	for _, bad := range []string{"", "App:v1", "app@sha256:" + fmt.Sprintf("%064d", 0), "app:bad tag"} {
		if got, err := NormalizeName(bad); err == nil {
			t.Errorf("NormalizeName(%q) = %q, want error", bad, got)
		}
	}
}

func writeManifest(t *testing.T, s *Store, configDigest string, layers ...string) string {
	t.Helper()
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeOCIManifest,
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": 1},
	}
	var ls []map[string]any
	for _, l := range layers {
		ls = append(ls, map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": 1})
	}
	m["layers"] = ls
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return mustWriteBlob(t, s, b)
}

func TestTags(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	m1 := writeManifest(t, s, digestOf([]byte("c1")))
	m2 := writeManifest(t, s, digestOf([]byte("c2")))
	if err := s.SetTag(ctx, "app:v1", m1); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTag(ctx, "docker.io/library/app:v2", m1); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTag(ctx, "app:v1", m2); err != nil { // retag
		t.Fatal(err)
	}
	if d, err := s.ResolveTag(ctx, "docker.io/library/app:v1"); err != nil || d != m2 {
		t.Errorf("ResolveTag(v1) = %s, %v; want %s", d, err, m2)
	}
	tags, err := s.Tags(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) != 2 || tags[0].Name != "docker.io/library/app:v1" || tags[1].Digest != m1 || tags[0].Created.IsZero() {
		t.Errorf("Tags = %+v", tags)
	}
	if err := s.RemoveTag(ctx, "app:v2"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveTag(ctx, "app:v2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second RemoveTag: %v, want ErrNotFound", err)
	}
	if _, err := s.ResolveTag(ctx, "app:v2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ResolveTag of removed tag: %v", err)
	}
	if err := s.SetTag(ctx, "app:v3", digestOf([]byte("no such manifest"))); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetTag to a missing manifest: %v, want ErrNotFound", err)
	}
	// The index is a valid OCI index with ref.name annotations.
	var idx ociIndex
	data, err := os.ReadFile(filepath.Join(s.Root(), "images", "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatal(err)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != mediaTypeOCIIndex || len(idx.Manifests) != 1 ||
		idx.Manifests[0].MediaType != mediaTypeOCIManifest || idx.Manifests[0].Size == 0 ||
		idx.Manifests[0].Annotations[AnnotationRefName] != "docker.io/library/app:v1" {
		t.Errorf("index.json = %s", data)
	}
}

func TestConcurrentSetTagLosesNothing(t *testing.T) {
	s := openStore(t)
	m := writeManifest(t, s, digestOf([]byte("c")))
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			if err := s.SetTag(t.Context(), fmt.Sprintf("app:t%d", i), m); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	tags, err := s.Tags(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) != 100 {
		t.Errorf("got %d tags, want 100", len(tags))
	}
	assertNoTemp(t, s)
}

func TestCorruptIndex(t *testing.T) {
	s := openStore(t)
	if err := os.WriteFile(filepath.Join(s.Root(), "images", "index.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tags(t.Context()); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Tags on a corrupt index: %v, want ErrCorrupt", err)
	}
}
