package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestE2EArchiveIndexAnnotations: the entries of an OCI or docker
// archive's index.json carry the annotations buildkitd's oci and docker
// exporters give them — the image's name and tag, and
// org.opencontainers.image.created, the build's SOURCE_DATE_EPOCH — so
// that the two builders' archives of a reproducible build agree there.
func TestE2EArchiveIndexAnnotations(t *testing.T) {
	e := newEnv(t)
	dir := e.context("FROM scratch\nCOPY f /f\n", map[string]string{"f": "data"})
	for _, typ := range []string{"oci", "docker"} {
		t.Run(typ, func(t *testing.T) {
			out := filepath.Join(e.dir, typ+".tar")
			e.mustRun("build", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", "-t", "app:v1",
				"-o", "type="+typ+",dest="+out, dir)
			got := topIndex(t, out)
			bkOut := filepath.Join(e.dir, "bk-"+typ+".tar")
			bkRun(t, dir, "--opt", "build-arg:SOURCE_DATE_EPOCH=1700000000",
				"--output", "type="+typ+",dest="+bkOut+",name=docker.io/library/app:v1")
			want := topIndex(t, bkOut)
			if len(got.Manifests) != 1 || len(want.Manifests) != 1 {
				t.Fatalf("index.json entries: builder %d, buildkitd %d, want 1", len(got.Manifests), len(want.Manifests))
			}
			if got.Manifests[0].Annotations["org.opencontainers.image.created"] != "2023-11-14T22:13:20Z" {
				t.Errorf("created = %q, want the epoch", got.Manifests[0].Annotations["org.opencontainers.image.created"])
			}
			if diff := cmp.Diff(want.Manifests[0].Annotations, got.Manifests[0].Annotations); diff != "" {
				t.Errorf("index.json annotations (-buildkitd +builder):\n%s", diff)
			}
		})
	}
}

// topIndex is the index.json of the archive at path.
func topIndex(t *testing.T, path string) *v1.IndexManifest {
	t.Helper()
	var idx v1.IndexManifest
	if err := json.Unmarshal(readOCITar(t, path)["index.json"], &idx); err != nil {
		t.Fatalf("index.json of %s: %v", path, err)
	}
	return &idx
}
