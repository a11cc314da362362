package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/exporter"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// One build, one digest: --iidfile, -q and --metadata-file report the
// manifest digest where the image went — the pushed one, which the
// registry resolves the tag to and which an OCI output of the same build
// holds too — with buildx's metadata keys.
func TestE2EDigestsWhereTheImageWent(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	dir := e.context("FROM busybox:fixture\nRUN echo digest > /d\n", nil)
	ref := reg + "/digests/app:v1"
	iid, md, oci := filepath.Join(e.dir, "iid"), filepath.Join(e.dir, "md.json"), filepath.Join(e.dir, "oci.tar")
	out, _ := e.mustRun("build", "-q", "--iidfile", iid, "--metadata-file", md, "-t", ref, "--push",
		"-o", "type=oci,dest="+oci, "--build-arg", "SOURCE_DATE_EPOCH=1700000000", dir)
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	registry := desc.Digest.String()
	if got := readFileString(t, iid); got != registry {
		t.Errorf("--iidfile %s; the registry resolves %s to %s", got, ref, registry)
	}
	if got := strings.TrimSpace(out); got != registry {
		t.Errorf("-q printed %q, want %s", got, registry)
	}
	// The push is an index (buildx's default provenance, which the OCI
	// output does not get): the OCI output holds its image.
	idx := ociIndexOf(t, oci)
	if img, _ := remoteImage(t, ref).Digest(); len(idx.Manifests) != 1 || idx.Manifests[0].Digest != img {
		t.Errorf("the OCI output's manifest %v differs from the pushed image %s", idx.Manifests, img)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(readFileString(t, md)), &m); err != nil {
		t.Fatal(err)
	}
	var digest, cfg, ref2, name2 string
	var d struct {
		MediaType string
		Digest    string
		Size      int64
	}
	for k, v := range map[string]any{"containerimage.digest": &digest, "containerimage.config.digest": &cfg,
		"containerimage.descriptor": &d, "buildx.build.ref": &ref2, "image.name": &name2} {
		if err := json.Unmarshal(m[k], v); err != nil {
			t.Errorf("metadata %s: %v (%s)", k, err, m[k])
		}
	}
	if digest != registry || d.Digest != registry || d.Size != desc.Size || d.MediaType != string(desc.MediaType) {
		t.Errorf("containerimage.digest %s, descriptor %+v; the registry has %s (%d bytes, %s)", digest, d, registry, desc.Size, desc.MediaType)
	}
	if !strings.HasPrefix(cfg, "sha256:") || !strings.HasPrefix(ref2, "builder/local/") || name2 != ref {
		t.Errorf("config digest %q, build ref %q, image.name %q (want %q)", cfg, ref2, name2, ref)
	}
}

// buildx's other output forms: -o - (the root filesystem as a tar on
// standard output), type=tar,dest=FILE, dest=DIR alone (type=local),
// type=oci,tar=false (a layout directory), type=docker,dest=- (the
// archive on standard output); and --annotation on the manifest.
func TestE2EOutputForms(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := e.context("FROM busybox:fixture\nRUN echo forms > /f\n", nil)

	stdout, _ := e.mustRun("build", "-q", "-o", "-", dir)
	if !tarHas(t, []byte(stdout), "f", "forms\n") || !tarHas(t, []byte(stdout), "bin/busybox", "") {
		t.Errorf("-o - did not write the root filesystem as a tar")
	}
	tarFile := filepath.Join(e.dir, "fs.tar")
	e.mustRun("build", "-o", "type=tar,dest="+tarFile, dir)
	if b, err := os.ReadFile(tarFile); err != nil || !tarHas(t, b, "f", "forms\n") {
		t.Errorf("type=tar: %v", err)
	}
	local := filepath.Join(e.dir, "local")
	e.mustRun("build", "-o", "dest="+local, dir)
	wantFileContent(t, filepath.Join(local, "f"), "forms\n")

	layout := filepath.Join(e.dir, "layout")
	e.mustRun("build", "--annotation", "org.opencontainers.image.title=forms", "--annotation", "manifest:com.example.k=v",
		"-o", "type=oci,dest="+layout+",tar=false", dir)
	for _, f := range []string{"oci-layout", "index.json"} {
		if _, err := os.Stat(filepath.Join(layout, f)); err != nil {
			t.Errorf("tar=false: %v", err)
		}
	}
	idx := ociIndexOf(t, layout)
	mb, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", idx.Manifests[0].Digest.Hex))
	if err != nil {
		t.Fatal(err)
	}
	var mf struct{ Annotations map[string]string }
	if err := json.Unmarshal(mb, &mf); err != nil || mf.Annotations["org.opencontainers.image.title"] != "forms" || mf.Annotations["com.example.k"] != "v" {
		t.Errorf("manifest annotations %v (%v)", mf.Annotations, err)
	}
	_, errOut, err := e.run("build", "--annotation", "index:k=v", dir)
	if err == nil || !strings.Contains(errOut, "need an image index") {
		t.Errorf("--annotation index: on a single-platform build: %v\n%s", err, errOut)
	}

	cmd := exec.Command(builderBin, "--root", e.root, "build", "-q", "-t", "forms:1", "-o", "type=docker,dest=-", dir)
	var arch bytes.Buffer
	cmd.Stdout = &arch
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if !tarHas(t, arch.Bytes(), "manifest.json", "") {
		t.Errorf("type=docker,dest=- did not write a docker archive to stdout")
	}
}

// tarHas reports whether the tar b holds the file name (with content, if
// not empty).
func tarHas(t *testing.T, b []byte, name, content string) bool {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return false
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		if strings.TrimPrefix(hdr.Name, "./") != name {
			continue
		}
		if content == "" {
			return true
		}
		got, _ := io.ReadAll(tr)
		return string(got) == content
	}
}

// ociIndexOf reads the index.json of an OCI output (tar or directory).
func ociIndexOf(t *testing.T, path string) *v1.IndexManifest {
	t.Helper()
	idx, err := exporter.OCIIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// An OCI output's name= (a quoted CSV field may list several, as buildx
// reads -o) names its image in index.json instead of the -t tags, and is
// --metadata-file's image.name when there is no -t; the descriptor there
// has the creation time BuildKit's oci exporter gives it, and the
// platform of a single-platform build.
func TestE2EOCIOutputNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := e.context("FROM busybox:fixture\nRUN echo names > /f\n", nil)
	oci, md := filepath.Join(e.dir, "oci.tar"), filepath.Join(e.dir, "md.json")
	e.mustRun("build", "--metadata-file", md, "-o", `type=oci,dest=`+oci+`,"name=reg.io/x/app:v1,reg.io/x/app:v2"`, dir)
	idx := ociIndexOf(t, oci)
	var names []string
	for _, d := range idx.Manifests {
		names = append(names, d.Annotations["io.containerd.image.name"])
		if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture == "" {
			t.Errorf("index.json entry %s: platform %v, want the image's", d.Digest, d.Platform)
		}
	}
	if diff := cmp.Diff([]string{"reg.io/x/app:v1", "reg.io/x/app:v2"}, names); diff != "" {
		t.Errorf("index.json names (-want +got):\n%s", diff)
	}
	var m struct {
		Name string        `json:"image.name"`
		Tags []string      `json:"tags"`
		Desc v1.Descriptor `json:"containerimage.descriptor"`
	}
	if err := json.Unmarshal([]byte(readFileString(t, md)), &m); err != nil {
		t.Fatal(err)
	}
	if m.Name != "reg.io/x/app:v1,reg.io/x/app:v2" || len(m.Tags) != 0 {
		t.Errorf("image.name %q, tags %q; want the output's names and no tag", m.Name, m.Tags)
	}
	if _, ok := m.Desc.Annotations["org.opencontainers.image.created"]; !ok || len(m.Desc.Annotations) != 1 || m.Desc.Platform == nil {
		t.Errorf("containerimage.descriptor %+v: want the creation time alone and the platform", m.Desc)
	}
}
