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

// TestE2ESameDigestAsBuildKit: a reproducible build whose layers both
// builders write the same bytes (COPY from the context, SOURCE_DATE_EPOCH,
// rewrite-timestamp, uncompressed layers: no compressor's choices) gives
// buildkitd's image digest: the same layer tars, config and manifest,
// byte for byte.
func TestE2ESameDigestAsBuildKit(t *testing.T) {
	e := newEnv(t)
	dir := e.context("FROM scratch\nCOPY foo /foo\nCOPY dir/ /app/dir/\nENV A=b\nWORKDIR /app\nCMD [\"run\"]\n",
		// dir/sub before dir/sub-x and dir/sub.txt: layers list a
		// directory's entries right after it, as BuildKit's walk does.
		map[string]string{"foo": "foo\n", "dir/bar": "bar\n", "dir/sub/baz": "baz\n", "dir/sub-x": "x\n", "dir/sub.txt": "t\n"})
	const epoch = "1700000000"
	out := filepath.Join(e.dir, "builder.tar")
	e.mustRun("build", "--build-arg", "SOURCE_DATE_EPOCH="+epoch,
		"-o", "type=oci,dest="+out+",rewrite-timestamp=true,compression=uncompressed", dir)
	bkOut := filepath.Join(e.dir, "bk.tar")
	bkRun(t, dir, "--opt", "build-arg:SOURCE_DATE_EPOCH="+epoch,
		"--output", "type=oci,dest="+bkOut+",rewrite-timestamp=true,compression=uncompressed")
	ours, theirs := readOCITar(t, out), readOCITar(t, bkOut)
	d, bkd := imageDesc(t, ours), imageDesc(t, theirs)
	if d.Digest != bkd.Digest {
		t.Errorf("image digest %s, buildkitd's %s", d.Digest, bkd.Digest)
		diffImages(t.Errorf, t, "buildkitd", theirs, bkd, "builder", ours, d)
		t.Logf("manifests:\nbuildkitd %s\nbuilder   %s", theirs["blobs/sha256/"+bkd.Digest.Hex], ours["blobs/sha256/"+d.Digest.Hex])
	}
}
