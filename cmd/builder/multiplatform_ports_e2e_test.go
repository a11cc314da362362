package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/builder-dev/builder/internal/attest"
)

// The ports of BuildKit's multi-platform Dockerfile tests
// (frontend/dockerfile/*_test.go at v0.34.2). Each runs the build with
// builder and checks upstream's assertions; where it is cheap, the same
// build runs on buildkitd too (buildctl, $BUILDKIT_HOST) and what
// upstream looks at is compared: the layout of local and tar outputs,
// the platforms and attestation entries of the image index.

// bkRun builds the context dir with buildctl and the Dockerfile
// frontend; opts are buildctl arguments (--opt, --output, ...).
func bkRun(t *testing.T, dir string, opts ...string) {
	t.Helper()
	bin, addr := buildkitClient(t)
	args := append([]string{"--addr", addr, "build", "--progress", "plain", "--frontend", "dockerfile.v0", "--opt", "cmdline=",
		"--local", "context=" + dir, "--local", "dockerfile=" + dir}, opts...)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("buildctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// bkBusybox are the buildctl options that make FROM busybox (and
// busybox:latest) the OCI layout of busybox:multi (e.multiBase).
func (e *e2eEnv) bkBusybox(base string) []string {
	e.t.Helper()
	layout := filepath.Join(e.dir, "busybox-layout")
	if _, err := os.Stat(layout); err != nil {
		e.mustRun("build", "--platform", "linux/amd64,linux/arm64", "-o", "type=oci,tar=false,dest="+layout, base)
	}
	return []string{"--oci-layout", "busybox=" + layout, "--opt", "context:busybox=oci-layout://busybox@" + ociLayoutIndexDigest(e.t, layout)}
}

func ociLayoutIndexDigest(t *testing.T, dir string) string {
	t.Helper()
	var top v1.IndexManifest
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil || json.Unmarshal(data, &top) != nil || len(top.Manifests) != 1 {
		t.Fatalf("index.json of %s: %v", dir, err)
	}
	return top.Manifests[0].Digest.String()
}

// multiBusybox stores busybox:multi as busybox:latest, the base image of
// upstream's provenance tests, and returns its build context.
func (e *e2eEnv) multiBusybox() string {
	e.t.Helper()
	base := e.multiBase()
	e.mustRun("tag", "busybox:multi", "busybox:latest")
	return base
}

// tree lists the files and directories under dir ("d/" for a directory).
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// tarEntries reads a tar file: its entry names in order and the contents
// by name (without "./").
func tarEntries(t *testing.T, path string) ([]string, map[string][]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var names []string
	m := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, m
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		n := strings.TrimPrefix(h.Name, "./")
		names = append(names, n)
		if m[n], err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
	}
}

// ociTar is an OCI archive read into memory.
type ociTar map[string][]byte

func readOCITar(t *testing.T, path string) ociTar {
	t.Helper()
	_, m := tarEntries(t, path)
	return m
}

func (o ociTar) blob(t *testing.T, d v1.Hash, into any) {
	t.Helper()
	data, ok := o["blobs/"+d.Algorithm+"/"+d.Hex]
	if !ok {
		t.Fatalf("no blob %s", d)
	}
	if err := json.Unmarshal(data, into); err != nil {
		t.Fatalf("blob %s: %v", d, err)
	}
}

// index is the image index the archive's index.json names: upstream
// requires index.json to hold one manifest, the index.
func (o ociTar) index(t *testing.T) *v1.IndexManifest {
	t.Helper()
	var top v1.IndexManifest
	if err := json.Unmarshal(o["index.json"], &top); err != nil || len(top.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, o["index.json"])
	}
	var idx v1.IndexManifest
	o.blob(t, top.Manifests[0].Digest, &idx)
	return &idx
}

// indexShape describes an index's entries as upstream checks them: the
// platform, and for an attestation manifest its reference type and the
// position of the image it refers to.
func indexShape(m *v1.IndexManifest) []string {
	pos := map[string]int{}
	for i, d := range m.Manifests {
		pos[d.Digest.String()] = i
	}
	var out []string
	for _, d := range m.Manifests {
		s := "no platform"
		if p := d.Platform; p != nil {
			s = strings.TrimSuffix(p.OS+"/"+p.Architecture+"/"+p.Variant, "/")
		}
		if typ := d.Annotations["vnd.docker.reference.type"]; typ != "" {
			s += fmt.Sprintf(" %s of #%d", typ, pos[d.Annotations["vnd.docker.reference.digest"]])
		}
		out = append(out, string(d.MediaType)+" "+s)
	}
	return out
}

func sameList(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\nbuilder:\n  %s\nbuildkit:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// testMultiNilRefsOCIExporter (dockerfile_image_test.go), ported: a FROM
// scratch build for linux/arm64,linux/amd64 into an OCI archive is one
// index (index.json's one manifest) of two images, in the order asked,
// as buildkitd's.
func TestE2EMultiNilRefsOCIExporter(t *testing.T) {
	e := newEnv(t)
	dir := e.context("FROM scratch", nil)
	out := filepath.Join(e.dir, "out.tar")
	e.mustRun("build", "--platform", "linux/arm64,linux/amd64", "-o", "type=oci,dest="+out, dir)
	idx := readOCITar(t, out).index(t)
	if len(idx.Manifests) != 2 {
		t.Fatalf("index of %d manifests, want 2: %+v", len(idx.Manifests), idx.Manifests)
	}
	bkOut := filepath.Join(e.dir, "bk.tar")
	bkRun(t, dir, "--opt", "platform=linux/arm64,linux/amd64", "--output", "type=oci,dest="+bkOut)
	sameList(t, "index entries", indexShape(idx), indexShape(readOCITar(t, bkOut).index(t)))
}

// testExportMultiPlatform (dockerfile_export_test.go), ported: one build
// of a FROM scratch Dockerfile for several platforms; the local output has
// a directory per platform (linux/arm normalized to linux_arm_v7), the
// OCI output an index of the platforms in order, each image one layer
// with its platform's file, its config's os/architecture and the
// TARGETPLATFORM label; windows/amd64 among them, as upstream (a Windows
// image made by COPY alone); both layouts are compared with buildkitd's.
func TestE2EExportMultiPlatform(t *testing.T) {
	e := newEnv(t)
	dir := e.context("\nFROM scratch\nARG TARGETARCH\nARG TARGETPLATFORM\nLABEL target=$TARGETPLATFORM\nCOPY arch-$TARGETARCH whoami\n",
		map[string]string{"arch-arm": "i am arm", "arch-amd64": "i am amd64", "arch-s390x": "i am s390x", "arch-ppc64le": "i am ppc64le"})
	dest := filepath.Join(e.dir, "local")
	e.mustRun("build", "--platform", "windows/amd64,linux/arm,linux/s390x", "-o", "type=local,dest="+dest, dir)
	wantFileContent(t, filepath.Join(dest, "windows_amd64/whoami"), "i am amd64")
	wantFileContent(t, filepath.Join(dest, "linux_arm_v7/whoami"), "i am arm")
	wantFileContent(t, filepath.Join(dest, "linux_s390x/whoami"), "i am s390x")
	bkDest := filepath.Join(e.dir, "bk-local")
	bkRun(t, dir, "--opt", "platform=windows/amd64,linux/arm,linux/s390x", "--output", "type=local,dest="+bkDest)
	sameList(t, "local output", tree(t, dest), tree(t, bkDest))

	out := filepath.Join(e.dir, "out.tar")
	e.mustRun("build", "--platform", "windows/amd64,linux/arm/v6,linux/ppc64le", "-o", "type=oci,dest="+out, dir)
	oci := readOCITar(t, out)
	idx := oci.index(t)
	if len(idx.Manifests) != 3 {
		t.Fatalf("index of %d manifests, want 3", len(idx.Manifests))
	}
	for i, exp := range []struct{ p, os, arch, dt string }{
		{"windows/amd64", "windows", "amd64", "i am amd64"},
		{"linux/arm/v6", "linux", "arm", "i am arm"},
		{"linux/ppc64le", "linux", "ppc64le", "i am ppc64le"},
	} {
		t.Run(exp.p, func(t *testing.T) {
			d := idx.Manifests[i]
			if p := d.Platform; p == nil || strings.TrimSuffix(p.OS+"/"+p.Architecture+"/"+p.Variant, "/") != exp.p {
				t.Errorf("platform %+v, want %s", d.Platform, exp.p)
			}
			var m v1.Manifest
			oci.blob(t, d.Digest, &m)
			if len(m.Layers) != 1 {
				t.Fatalf("%d layers, want 1", len(m.Layers))
			}
			if got := gunzipTarFile(t, oci["blobs/sha256/"+m.Layers[0].Digest.Hex], "whoami"); got != exp.dt {
				t.Errorf("whoami = %q, want %q", got, exp.dt)
			}
			var cfg v1.ConfigFile
			oci.blob(t, m.Config.Digest, &cfg)
			if cfg.OS != exp.os || cfg.Architecture != exp.arch || cfg.Config.Labels["target"] != exp.p {
				t.Errorf("config os %q architecture %q label target %q", cfg.OS, cfg.Architecture, cfg.Config.Labels["target"])
			}
		})
	}
	bkOut := filepath.Join(e.dir, "bk.tar")
	bkRun(t, dir, "--opt", "platform=windows/amd64,linux/arm/v6,linux/ppc64le", "--output", "type=oci,dest="+bkOut)
	sameList(t, "index entries", indexShape(idx), indexShape(readOCITar(t, bkOut).index(t)))
}

// gunzipTarFile is the content of name in a gzip-compressed layer.
func gunzipTarFile(t *testing.T, layer []byte, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "layer.tar.gz")
	if err := os.WriteFile(p, layer, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tar", "-xzOf", p, name).Output()
	if err != nil {
		t.Fatalf("tar -xzOf %s: %v", name, err)
	}
	return string(out)
}

// testTarExporterMulti (dockerfile_export_test.go), ported: a tar output
// of a single-platform build holds the root filesystem; of a
// linux/amd64,darwin/amd64 build, one directory per platform
// (linux_amd64/forlinux, darwin_amd64/fordarwin). The entries, in
// order, are buildkitd's (which sorts the platform directories).
func TestE2ETarExporterMulti(t *testing.T) {
	e := newEnv(t)
	dir := e.context("\nFROM scratch AS stage-linux\nCOPY foo forlinux\n\nFROM scratch AS stage-darwin\nCOPY bar fordarwin\n\nFROM stage-$TARGETOS\n",
		map[string]string{"foo": "data", "bar": "data2"})
	single := filepath.Join(e.dir, "single.tar")
	e.mustRun("build", "-o", "type=tar,dest="+single, dir)
	if _, m := tarEntries(t, single); string(m["forlinux"]) != "data" {
		t.Errorf("forlinux = %q, want data", m["forlinux"])
	}
	multi := filepath.Join(e.dir, "multi.tar")
	e.mustRun("build", "--platform", "linux/amd64,darwin/amd64", "-o", "type=tar,dest="+multi, dir)
	names, m := tarEntries(t, multi)
	if string(m["linux_amd64/forlinux"]) != "data" || string(m["darwin_amd64/fordarwin"]) != "data2" {
		t.Errorf("linux_amd64/forlinux = %q, darwin_amd64/fordarwin = %q", m["linux_amd64/forlinux"], m["darwin_amd64/fordarwin"])
	}
	bkOut := filepath.Join(e.dir, "bk.tar")
	bkRun(t, dir, "--opt", "platform=linux/amd64,darwin/amd64", "--output", "type=tar,dest="+bkOut)
	bkNames, _ := tarEntries(t, bkOut)
	sameList(t, "tar entries", names, bkNames)
}

// testCacheMultiPlatformImportExport (dockerfile_cache_test.go), ported:
// a linux/amd64,linux/arm/v7 build whose files come from a build-platform
// stage (RUN on the host: no emulation) is pushed with an inline cache;
// twice, a store emptied of everything (upstream prunes the daemon; here
// a fresh root) builds it with --cache-from the pushed image and pushes
// again: each platform's random file is the first build's. Adapted: the
// busybox base comes from the test registry (a fresh store has no
// busybox); --provenance=false keeps the index to the two images, as
// upstream's solve (buildx would add its default provenance to a push).
func TestE2ECacheMultiPlatformImportExport(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	busybox := reg + "/library/busybox:latest"
	e.mustRun("push", "busybox:fixture", busybox)
	dir := e.context("\nFROM --platform=$BUILDPLATFORM "+busybox+" AS base\nARG TARGETARCH\nRUN echo -n $TARGETARCH> arch && cat /dev/urandom | head -c 100 | sha256sum > unique\nFROM scratch\nCOPY --from=base unique /\nCOPY --from=base arch /\n", nil)
	target := reg + "/buildkit/testexportdf:multi-img"
	build := func(env *e2eEnv, args ...string) {
		env.mustRun(append(append([]string{"build", "--provenance=false", "--platform", "linux/amd64,linux/arm/v7",
			"--cache-to", "type=inline", "-t", target, "--push"}, args...), dir)...)
	}
	// layers reads the pushed image of platform p: the files of its two
	// layers (unique, then arch).
	layers := func(p string) (unique, arch string) {
		t.Helper()
		idx := remoteIndex(t, target)
		if len(idx.Manifests) != 2 {
			t.Fatalf("pushed index of %d manifests, want 2", len(idx.Manifests))
		}
		for _, d := range idx.Manifests {
			if d.Platform == nil || strings.TrimSuffix(d.Platform.OS+"/"+d.Platform.Architecture+"/"+d.Platform.Variant, "/") != p {
				continue
			}
			img := remoteChild(t, target, d.Digest)
			ls, err := img.Layers()
			if err != nil || len(ls) != 2 {
				t.Fatalf("%s: %d layers (%v), want 2", p, len(ls), err)
			}
			return layerContent(t, ls[0], "unique"), layerContent(t, ls[1], "arch")
		}
		t.Fatalf("no %s image in the pushed index", p)
		return "", ""
	}
	build(e)
	uniqueAMD, archAMD := layers("linux/amd64")
	uniqueARM, _ := layers("linux/arm/v7")
	if strings.TrimSpace(archAMD) != "amd64" || uniqueAMD == "" || uniqueAMD == uniqueARM {
		t.Fatalf("first build: amd64 arch %q unique %q, arm unique %q", archAMD, uniqueAMD, uniqueARM)
	}
	for i := range 2 {
		fresh := e.fresh(fmt.Sprintf("root-fresh-%d", i))
		build(fresh, "--cache-from", target)
		u1, _ := layers("linux/amd64")
		u2, arch2 := layers("linux/arm/v7")
		if strings.TrimSpace(arch2) != "arm" || u1 != uniqueAMD || u2 != uniqueARM {
			t.Errorf("rebuild %d from the inline cache: arm arch %q, unique amd64 %q arm %q; want arm, %q, %q", i, arch2, u1, u2, uniqueAMD, uniqueARM)
		}
	}
}

func remoteChild(t *testing.T, ref string, d v1.Hash) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r.Context().Digest(d.String()))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// layerContent is the content of the file name in layer l.
func layerContent(t *testing.T, l v1.Layer, name string) string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("layer has no %s: %v", name, err)
		}
		if strings.TrimPrefix(h.Name, "./") == name {
			b, _ := io.ReadAll(tr)
			return string(b)
		}
	}
}

// testMultiPlatformProvenance (dockerfile_provenance_test.go), ported: a
// linux/amd64,linux/arm64 push with a max-mode provenance is an index of
// four manifests; each platform's image has its RUN's file (arm64's RUN
// under emulation), and its attestation manifest a SLSA v1 statement with
// BuildKit's build type, no builder ID or config source, the base image
// of its platform as the one dependency and exactly the two frontend
// args asked. The same build's OCI output has buildkitd's entries (the
// images, then their attestation manifests). Adapted: busybox:latest is
// Debian's busybox for both platforms.
func TestE2EMultiPlatformProvenance(t *testing.T) {
	e := newEnv(t)
	requireEmulation(t, v1.Platform{OS: "linux", Architecture: "arm64"})
	reg := startRegistry(t)
	base := e.multiBusybox()
	dir := e.context("\nFROM busybox:latest\nARG TARGETARCH\nRUN echo \"ok-$TARGETARCH\" > /foo\n", nil)
	target := reg + "/buildkit/testmultiprovenance:latest"
	out := filepath.Join(e.dir, "out.tar")
	e.mustRun("build", "--provenance", "mode=max", "--build-arg", "FOO=bar", "--label", "lbl=abc", "--platform", "linux/amd64,linux/arm64",
		"-t", target, "--push", "-o", "type=oci,dest="+out, dir)
	idx := remoteIndex(t, target)
	if len(idx.Manifests) != 4 {
		t.Fatalf("pushed index of %d manifests, want 4", len(idx.Manifests))
	}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		var img, att *v1.Descriptor
		for i, d := range idx.Manifests {
			if d.Platform != nil && d.Platform.OS+"/"+d.Platform.Architecture == p {
				img = &idx.Manifests[i]
			}
		}
		if img == nil {
			t.Fatalf("no %s image", p)
		}
		for i, d := range idx.Manifests {
			if d.Annotations["vnd.docker.reference.digest"] == img.Digest.String() {
				att = &idx.Manifests[i]
			}
		}
		ls, err := remoteChild(t, target, img.Digest).Layers()
		if err != nil || len(ls) != 2 {
			t.Fatalf("%s: %d layers (%v)", p, len(ls), err)
		}
		if got, want := layerContent(t, ls[1], "foo"), "ok-"+strings.TrimPrefix(p, "linux/")+"\n"; got != want {
			t.Errorf("%s: foo = %q, want %q", p, got, want)
		}
		if att == nil || att.Annotations["vnd.docker.reference.type"] != "attestation-manifest" {
			t.Fatalf("%s: attestation manifest %+v", p, att)
		}
		als, err := remoteChild(t, target, att.Digest).Layers()
		if err != nil || len(als) == 0 {
			t.Fatalf("%s: attestation layers %v", p, err)
		}
		rc, err := als[0].Compressed()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		var stmt attest.Statement
		if err := json.Unmarshal(raw, &stmt); err != nil {
			t.Fatal(err)
		}
		if stmt.Type != "https://in-toto.io/Statement/v1" || stmt.PredicateType != "https://slsa.dev/provenance/v1" {
			t.Errorf("%s: statement type %q predicate type %q", p, stmt.Type, stmt.PredicateType)
		}
		pred := predicateOf(t, raw)
		if pred.BuildDefinition.BuildType != "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md" ||
			pred.RunDetails.Builder.ID != "" || pred.BuildDefinition.ExternalParameters.ConfigSource.URI != "" {
			t.Errorf("%s: buildType %q builder %q configSource %q", p, pred.BuildDefinition.BuildType, pred.RunDetails.Builder.ID,
				pred.BuildDefinition.ExternalParameters.ConfigSource.URI)
		}
		deps := pred.BuildDefinition.ResolvedDependencies
		if len(deps) != 1 || !strings.Contains(deps[0].URI, "pkg:docker/busybox@latest") || !strings.Contains(deps[0].URI, url.PathEscape(p)) {
			t.Errorf("%s: resolvedDependencies %+v", p, deps)
		}
		args := pred.BuildDefinition.ExternalParameters.Request.Args
		if len(args) != 2 || args["build-arg:FOO"] != "bar" || args["label:lbl"] != "abc" {
			t.Errorf("%s: args %+v, want build-arg:FOO and label:lbl", p, args)
		}
	}
	bkOut := filepath.Join(e.dir, "bk.tar")
	bkRun(t, dir, append(e.bkBusybox(base), "--opt", "attest:provenance=mode=max", "--opt", "build-arg:FOO=bar", "--opt", "label:lbl=abc",
		"--opt", "platform=linux/amd64,linux/arm64", "--output", "type=oci,dest="+bkOut)...)
	ours := indexShape(readOCITar(t, out).index(t))
	sameList(t, "OCI index entries", ours, indexShape(readOCITar(t, bkOut).index(t)))
	sameList(t, "pushed index entries", indexShape(idx), ours)
}

// testDuplicatePlatformProvenance (dockerfile_provenance_test.go), ported:
// the same platform twice, with a max-mode provenance, builds (upstream's
// assertion: no error, BuildKit issue 3562). Adapted: alpine is
// busybox:latest; the unused nanoserver stage is never resolved. Not
// compared: buildkitd makes an index with the platform's image and its
// attestation manifest twice each; builder takes each platform once
// (platformList) and makes one of each.
func TestE2EDuplicatePlatformProvenance(t *testing.T) {
	e := newEnv(t)
	e.mustRun("tag", "busybox:fixture", "busybox:latest")
	dir := e.context("\nFROM busybox:latest AS base-linux\nFROM nanoserver AS base-windows\nFROM base-$TARGETOS\n", nil)
	out := filepath.Join(e.dir, "out.tar")
	e.mustRun("build", "--provenance", "mode=max", "--platform", "linux/amd64,linux/amd64", "-o", "type=oci,dest="+out, dir)
	host := "linux/" + hostPlatform().Architecture
	want := []string{"application/vnd.oci.image.manifest.v1+json " + host,
		"application/vnd.oci.image.manifest.v1+json unknown/unknown attestation-manifest of #0"}
	sameList(t, "OCI index entries", indexShape(readOCITar(t, out).index(t)), want)
}

// testNilProvenance's multi-platform half (dockerfile_provenance_test.go),
// ported: a layerless linux/amd64,linux/arm64 build with a max-mode
// provenance exports to the image store, a directory and a tar. The
// local and tar outputs are compared with buildkitd's: an empty directory
// per platform (BuildKit makes no provenance for a nil ref).
func TestE2ENilProvenanceMultiPlatform(t *testing.T) {
	e := newEnv(t)
	dir := e.context("\nFROM scratch\nENV FOO=bar\n", nil)
	multi := []string{"build", "--provenance=mode=max", "--platform", "linux/amd64,linux/arm64"}
	e.mustRun(append(multi, "-t", "nil:multi", dir)...)
	local, tarOut := filepath.Join(e.dir, "local"), filepath.Join(e.dir, "out.tar")
	e.mustRun(append(multi, "-o", "type=local,dest="+local, dir)...)
	e.mustRun(append(multi, "-o", "type=tar,dest="+tarOut, dir)...)
	bkLocal, bkTar := filepath.Join(e.dir, "bk-local"), filepath.Join(e.dir, "bk.tar")
	bk := []string{"--opt", "attest:provenance=mode=max", "--opt", "platform=linux/amd64,linux/arm64"}
	bkRun(t, dir, append(bk, "--output", "type=local,dest="+bkLocal)...)
	bkRun(t, dir, append(bk, "--output", "type=tar,dest="+bkTar)...)
	sameList(t, "local output", tree(t, local), tree(t, bkLocal))
	ours, _ := tarEntries(t, tarOut)
	theirs, _ := tarEntries(t, bkTar)
	sameList(t, "tar entries", ours, theirs)
	// The single-platform half's local output is buildkitd's too.
	single, bkSingle := filepath.Join(e.dir, "single"), filepath.Join(e.dir, "bk-single")
	e.mustRun("build", "--provenance=mode=max", "-o", "type=local,dest="+single, dir)
	bkRun(t, dir, "--opt", "attest:provenance=mode=max", "--output", "type=local,dest="+bkSingle)
	sameList(t, "single-platform local output", tree(t, single), tree(t, bkSingle))
}

// provenanceTarget is the targetPlatform of the provenance file p.
func provenanceTarget(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil || len(data) == 0 {
		t.Fatalf("%s: %v", p, err)
	}
	var stmt struct {
		Predicate attest.Predicate `json:"predicate"`
	}
	if err := json.Unmarshal(data, &stmt); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return stmt.Predicate.BuildDefinition.InternalParameters.TargetPlatform
}

// provenanceLocal is upstream's Dockerfile of the local-export
// provenance tests.
const provenanceLocal = "\nFROM busybox:latest AS base\nCOPY <<EOF /out/foo\nok\nEOF\n\nFROM scratch\nCOPY --from=base /out /\n"

// testProvenanceExportLocalForceSplit (dockerfile_provenance_test.go),
// ported: platform-split=true puts a single-platform build's files and
// provenance.json in the platform's directory, as buildkitd.
func TestE2EProvenanceExportLocalForceSplit(t *testing.T) {
	e := newEnv(t)
	base := e.multiBusybox()
	dir := e.context(provenanceLocal, nil)
	dest := filepath.Join(e.dir, "local")
	e.mustRun("build", "--provenance=mode=max", "-o", "type=local,dest="+dest+",platform-split=true", dir)
	host := attest.PlatformString(hostPlatform())
	expPlatform := strings.ReplaceAll(host, "/", "_")
	wantFileContent(t, filepath.Join(dest, expPlatform, "foo"), "ok\n")
	if got := provenanceTarget(t, filepath.Join(dest, expPlatform, "provenance.json")); got != host {
		t.Errorf("targetPlatform %q, want %q", got, host)
	}
	bkDest := filepath.Join(e.dir, "bk-local")
	bkRun(t, dir, append(e.bkBusybox(base), "--opt", "attest:provenance=mode=max", "--output", "type=local,dest="+bkDest+",platform-split=true")...)
	sameList(t, "local output", tree(t, dest), tree(t, bkDest))
}

// testProvenanceExportLocalMultiPlatform (dockerfile_provenance_test.go),
// ported: a linux/amd64,linux/arm64 local output has each platform's
// files and provenance.json (its targetPlatform the platform's) in the
// platform's directory, as buildkitd's; a tar output of the build too.
func TestE2EProvenanceExportLocalMultiPlatform(t *testing.T) {
	e := newEnv(t)
	base := e.multiBusybox()
	dir := e.context(provenanceLocal, nil)
	dest, tarOut := filepath.Join(e.dir, "local"), filepath.Join(e.dir, "out.tar")
	multi := []string{"build", "--provenance=mode=max", "--platform", "linux/amd64,linux/arm64"}
	e.mustRun(append(multi, "-o", "type=local,dest="+dest, dir)...)
	for _, p := range []string{"linux_amd64", "linux_arm64"} {
		wantFileContent(t, filepath.Join(dest, p, "foo"), "ok\n")
		if got := provenanceTarget(t, filepath.Join(dest, p, "provenance.json")); got != strings.ReplaceAll(p, "_", "/") {
			t.Errorf("%s: targetPlatform %q", p, got)
		}
	}
	e.mustRun(append(multi, "-o", "type=tar,dest="+tarOut, dir)...)
	bkDest, bkTar := filepath.Join(e.dir, "bk-local"), filepath.Join(e.dir, "bk.tar")
	bk := append(e.bkBusybox(base), "--opt", "attest:provenance=mode=max", "--opt", "platform=linux/amd64,linux/arm64")
	bkRun(t, dir, append(bk, "--output", "type=local,dest="+bkDest)...)
	bkRun(t, dir, append(bk, "--output", "type=tar,dest="+bkTar)...)
	sameList(t, "local output", tree(t, dest), tree(t, bkDest))
	ours, _ := tarEntries(t, tarOut)
	theirs, _ := tarEntries(t, bkTar)
	sameList(t, "tar entries", ours, theirs)
}

// testProvenanceExportLocalMultiPlatformNoSplit
// (dockerfile_provenance_test.go), ported: platform-split=false writes
// both platforms' files into one directory with a provenance file per
// platform, provenance.linux_amd64.json, as buildkitd; a tar output with
// platform-split=false keeps the directories and names the files so too
// (buildkitd's tar exporter); a file both platforms have is refused.
func TestE2EProvenanceExportLocalMultiPlatformNoSplit(t *testing.T) {
	e := newEnv(t)
	base := e.multiBusybox()
	dir := e.context("\nFROM busybox:latest AS base\nARG TARGETARCH\nCOPY <<EOF /out/foo_${TARGETARCH}\nok\nEOF\n\nFROM scratch\nCOPY --from=base /out /\n", nil)
	dest, tarOut := filepath.Join(e.dir, "local"), filepath.Join(e.dir, "out.tar")
	multi := []string{"build", "--provenance=mode=max", "--platform", "linux/amd64,linux/arm64"}
	e.mustRun(append(multi, "-o", "type=local,dest="+dest+",platform-split=false", dir)...)
	for _, arch := range []string{"amd64", "arm64"} {
		wantFileContent(t, filepath.Join(dest, "foo_"+arch), "ok\n")
		if got := provenanceTarget(t, filepath.Join(dest, "provenance.linux_"+arch+".json")); got != "linux/"+arch {
			t.Errorf("provenance.linux_%s.json: targetPlatform %q", arch, got)
		}
	}
	e.mustRun(append(multi, "-o", "type=tar,dest="+tarOut+",platform-split=false", dir)...)
	bkDest, bkTar := filepath.Join(e.dir, "bk-local"), filepath.Join(e.dir, "bk.tar")
	bk := append(e.bkBusybox(base), "--opt", "attest:provenance=mode=max", "--opt", "platform=linux/amd64,linux/arm64")
	bkRun(t, dir, append(bk, "--output", "type=local,dest="+bkDest+",platform-split=false")...)
	bkRun(t, dir, append(bk, "--output", "type=tar,dest="+bkTar+",platform-split=false")...)
	sameList(t, "local output", tree(t, dest), tree(t, bkDest))
	ours, _ := tarEntries(t, tarOut)
	theirs, _ := tarEntries(t, bkTar)
	sameList(t, "tar entries", ours, theirs)

	same := e.context(provenanceLocal, nil)
	_, errOut, err := e.run(append(multi, "-o", "type=local,dest="+filepath.Join(e.dir, "clash")+",platform-split=false", same)...)
	if err == nil || !strings.Contains(errOut, "when split option is disabled") || !strings.Contains(errOut, "cannot overwrite foo from linux/") {
		t.Errorf("a file of both platforms with platform-split=false: %v\n%s", err, errOut)
	}
}

// testFrontendEvaluate's multi-platform half (dockerfile_client_test.go),
// ported: a linux/amd64,linux/arm64 build of a COPY whose source is
// missing fails with BuildKit's error. Adapted: upstream's evaluate-only
// gateway solve is a build here.
func TestE2EFrontendEvaluateMultiPlatform(t *testing.T) {
	e := newEnv(t)
	dir := e.context("\nFROM scratch\nCOPY badfile /\n", nil)
	_, errOut, err := e.run("build", "--platform", "linux/amd64,linux/arm64", dir)
	if err == nil || !strings.Contains(errOut, `"/badfile": not found`) {
		t.Errorf("build: %v\n%s", err, errOut)
	}
}

// testBaseImagePlatformMismatch (dockerfile_check_test.go), ported: an
// image built for the platform that is not the host's and pushed, then
// used as the base of a build for the host's platform, gives BuildKit's
// InvalidBaseImagePlatform warning on line 2, in a check and in the build
// (which succeeds). Adapted: upstream's lint subrequest is --call
// check,format=json; --provenance=false pushes the plain image upstream's
// solve does (buildx would add its default provenance).
func TestE2EBaseImagePlatformMismatch(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	other := map[bool]string{true: "amd64", false: "arm64"}[hostPlatform().Architecture == "arm64"]
	targetPlatform, expected := "linux/"+other, attest.PlatformString(hostPlatform())
	target := reg + "/buildkit/testbaseimageplatform:latest"
	e.mustRun("build", "--provenance=false", "--platform", targetPlatform, "-t", target, "--push",
		e.context("\nFROM scratch\nCOPY foo /foo\n", map[string]string{"foo": "test"}))
	fresh := e.fresh("root-fresh")
	dir := e.context(fmt.Sprintf("\nFROM %s\nENV foo=bar\n\t", target), nil)
	detail := fmt.Sprintf("Base image %s was pulled with platform %q, expected %q for current build", target, targetPlatform, expected)
	out, _, _ := fresh.run("build", "--call", "check,format=json", "--platform", expected, dir)
	var res lintJSON
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("check output: %v\n%s", err, out)
	}
	if len(res.Warnings) != 1 {
		t.Fatalf("warnings %+v, want one", res.Warnings)
	}
	w := res.Warnings[0]
	if w.RuleName != "InvalidBaseImagePlatform" || w.Description != "Base image platform does not match expected target platform" ||
		w.Detail != detail || w.Location == nil || len(w.Location.Ranges) != 1 || w.Location.Ranges[0].Start.Line != 2 {
		t.Errorf("warning %+v, want InvalidBaseImagePlatform on line 2: %s", w, detail)
	}
	_, progress := fresh.mustRun("build", "--progress", "plain", "--platform", expected, dir)
	if !strings.Contains(progress, "InvalidBaseImagePlatform: "+detail+" (line 2)") {
		t.Errorf("build progress lacks the warning:\n%s", progress)
	}
}

// testDefaultShellAndPath (dockerfile_cmd_test.go), the half the
// conformance case default-shell-and-path cannot hold: one build for
// windows/amd64,linux/amd64 into an OCI archive; the Windows image's
// shell-form ENTRYPOINT runs cmd /S /C and it has no Env (BuildKit sets
// no PATH for Windows, moby/buildkit#5445), the Linux one /bin/sh -c and
// the default PATH; one layer each. The index is compared with
// buildkitd's, and each config's entrypoint, env and working directory.
func TestE2EDefaultShellAndPathWindows(t *testing.T) {
	e := newEnv(t)
	dir := e.context("\nFROM scratch\nENTRYPOINT foo bar\nCOPY Dockerfile .\n", nil)
	out, bkOut := filepath.Join(e.dir, "out.tar"), filepath.Join(e.dir, "bk.tar")
	e.mustRun("build", "--platform", "windows/amd64,linux/amd64", "-o", "type=oci,dest="+out, dir)
	bkRun(t, dir, "--opt", "platform=windows/amd64,linux/amd64", "--output", "type=oci,dest="+bkOut)
	oci, bk := readOCITar(t, out), readOCITar(t, bkOut)
	idx, bkIdx := oci.index(t), bk.index(t)
	sameList(t, "index entries", indexShape(idx), indexShape(bkIdx))
	if len(idx.Manifests) != 2 || len(bkIdx.Manifests) != 2 {
		t.Fatalf("indexes of %d and %d manifests (builder, buildkit), want 2", len(idx.Manifests), len(bkIdx.Manifests))
	}
	config := func(o ociTar, d v1.Descriptor) (v1.Config, int) {
		var m v1.Manifest
		o.blob(t, d.Digest, &m)
		var cfg v1.ConfigFile
		o.blob(t, m.Config.Digest, &cfg)
		return cfg.Config, len(m.Layers)
	}
	for i, exp := range []struct {
		p          string
		entrypoint []string
		env        []string
		workdir    string
	}{
		{"windows/amd64", []string{"cmd", "/S", "/C", "foo bar"}, nil, `\`},
		{"linux/amd64", []string{"/bin/sh", "-c", "foo bar"}, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, "/"},
	} {
		t.Run(exp.p, func(t *testing.T) {
			got, layers := config(oci, idx.Manifests[i])
			want, _ := config(bk, bkIdx.Manifests[i])
			if layers != 1 {
				t.Errorf("%d layers, want 1", layers)
			}
			if diff := cmp.Diff(exp.entrypoint, got.Entrypoint); diff != "" {
				t.Errorf("entrypoint (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(exp.env, got.Env); diff != "" {
				t.Errorf("env (-want +got):\n%s", diff)
			}
			if got.WorkingDir != exp.workdir {
				t.Errorf("working directory %q, want %q", got.WorkingDir, exp.workdir)
			}
			if diff := cmp.Diff(want.Entrypoint, got.Entrypoint); diff != "" || !slices.Equal(want.Env, got.Env) || want.WorkingDir != got.WorkingDir {
				t.Errorf("config differs from buildkitd's: entrypoint %q env %q workdir %q, buildkitd's %q %q %q", got.Entrypoint, got.Env, got.WorkingDir, want.Entrypoint, want.Env, want.WorkingDir)
			}
		})
	}
}
