package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/builder-dev/builder/exporter"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// layerDirs lists the layer directories of e's store.
func (e *e2eEnv) layerDirs() []string {
	e.t.Helper()
	entries, _ := os.ReadDir(filepath.Join(e.root, "snapshots"))
	var out []string
	for _, en := range entries {
		if len(en.Name()) == 64 {
			out = append(out, "sha256:"+en.Name())
		}
	}
	return out
}

// TestE2ELazyCacheImport, counted at the registry: on an empty store
// (a fresh runner), a build FROM a registry image with --cache-from a
// registry cache downloads layers only when something needs their bytes.
// A fully cached build pushed to that registry downloads and uploads no
// layer blob, the base image's included (the push skips them, one HEAD
// each, or mounts them); a fully cached build whose result is not
// exported downloads only manifests and configs, and its image can still
// be saved (the save fetches the layers then) and passes fsck; one
// exported as an OCI archive takes the registry's blobs as they are; a partly
// cached build downloads exactly the layers under its first miss. The
// build reports the bytes and seconds of the import.
func TestE2ELazyCacheImport(t *testing.T) {
	e := newEnv(t)
	p := startRegProxy(t, startRegistry(t))
	base := p.Addr + "/base/busybox:fixture"
	e.mustRun("push", "busybox:fixture", base)
	baseLayers := layerDigestStrings(t, base)
	df := "FROM " + base + "\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\nRUN echo %s > /c.txt\n"
	files := map[string]string{"a.txt": "lazy\n"}
	ctx := e.context(strings.Replace(df, "%s", "one", 1), files)
	cache := p.Addr + "/app:cache"
	e.mustRun("build", "--cache-to", "type=registry,ref="+cache+",mode=max", "-t", p.Addr+"/app:v1", "--push", ctx)
	cacheLayers := layerDigestStrings(t, cache)
	if len(cacheLayers) != 3 {
		t.Fatalf("cache holds %d layers, want 3", len(cacheLayers))
	}
	all := append(slices.Clone(baseLayers), cacheLayers...)

	// Fully cached, pushed to the registry of the cache and the base.
	f := e.fresh("root-push")
	p.reset()
	_, errOut := f.mustRun("build", "--progress", "plain", "--cache-from", cache, "-t", p.Addr+"/app:v2", "--push", ctx)
	if strings.Count(errOut, "CACHED (from "+cache+")") != 3 {
		t.Errorf("not every step came from the cache:\n%s", errOut)
	}
	if got, n := p.blobDownloads(); len(intersect(got, all)) != 0 {
		t.Errorf("fully cached build with --push downloaded layer blobs %v (%d bytes)", intersect(got, all), n)
	}
	if up := intersect(p.uploads(), layerDigestStrings(t, p.Addr+"/app:v2")); len(up) != 0 {
		t.Errorf("fully cached build with --push uploaded layer blobs %v", up)
	}
	if !strings.Contains(errOut, "remote cache: imported ") || !strings.Contains(errOut, "(0 layers fetched when needed)") {
		t.Errorf("the build does not report a lazy import of no layer:\n%s", errOut)
	}
	if dirs := f.layerDirs(); len(dirs) != 0 {
		t.Errorf("layers unpacked by a fully cached build: %v", dirs)
	}
	f.mustRun("fsck")

	// Fully cached, not exported: manifests and configs only; the image
	// is usable (fsck, save fetches its layers).
	n := e.fresh("root-noexport")
	p.reset()
	meta := filepath.Join(e.dir, "noexport.json")
	n.mustRun("build", "--cache-from", cache, "--metadata-file", meta, ctx)
	if got, _ := p.blobDownloads(); len(intersect(got, all)) != 0 {
		t.Errorf("build not exported downloaded layer blobs %v", intersect(got, all))
	}
	n.mustRun("fsck")
	digest := readMetadata(t, meta).Digest
	n.mustRun("save", "-o", filepath.Join(e.dir, "noexport.tar"), digest)
	if got, _ := p.blobDownloads(); len(intersect(got, all)) != len(all) {
		t.Errorf("save of the lazily built image fetched %v, want all %d layers", intersect(got, all), len(all))
	}
	n.mustRun("fsck")

	// Fully cached, exported as an OCI archive with the cache's codec
	// (gzip): the archive's layers are the registry's blobs, the base's
	// and the cache's, each downloaded once and none unpacked or
	// compressed again.
	o := e.fresh("root-oci")
	p.reset()
	oci := filepath.Join(e.dir, "cached.oci.tar")
	o.mustRun("build", "--cache-from", cache, "-o", "type=oci,dest="+oci, ctx)
	if got, _ := p.blobDownloads(); !slices.Equal(sorted(layersIn(got, all)), sorted(all)) {
		t.Errorf("OCI export of a fully cached build downloaded layers %v, want each of %v once", layersIn(got, all), all)
	}
	if dirs := o.layerDirs(); len(dirs) != 0 {
		t.Errorf("layers unpacked for an OCI export of cached layers: %v", dirs)
	}
	if got := ociArchiveLayers(t, oci); !slices.Equal(got, all) {
		t.Errorf("OCI archive's layers %v, want the registry's %v", got, all)
	}

	// Partly cached: the last RUN changes; only the layers under it are
	// fetched (the base's, the COPY's and the first RUN's), not the
	// cached last one.
	g := e.fresh("root-partial")
	p.reset()
	ctx2 := e.context(strings.Replace(df, "%s", "two", 1), files)
	_, errOut = g.mustRun("build", "--progress", "plain", "--cache-from", cache, ctx2)
	got, _ := p.blobDownloads()
	want := append(slices.Clone(baseLayers), cacheLayers[:2]...)
	if fetched := intersect(got, all); len(fetched) != len(want) || len(intersect(fetched, want)) != len(want) {
		t.Errorf("partly cached build fetched %v, want %v (the layers under the changed step)", fetched, want)
	}
	if !strings.Contains(errOut, fmt.Sprintf("(%d layers fetched when needed)", len(want))) {
		t.Errorf("the build does not report fetching %d layers:\n%s", len(want), errOut)
	}
}

// intersect lists the elements of a that are in b, once each.
func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) && !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// ociArchiveLayers lists the layer digests of the only image of the OCI
// archive at path.
func ociArchiveLayers(t *testing.T, path string) []string {
	t.Helper()
	dir := t.TempDir()
	if err := exporter.ExtractLayout(t.Context(), path, dir); err != nil {
		t.Fatal(err)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("index of %s: %v (%d manifests, want 1)", path, err, len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

// layersIn lists the elements of got that are in all, repeats included.
func layersIn(got, all []string) []string {
	var out []string
	for _, d := range got {
		if slices.Contains(all, d) {
			out = append(out, d)
		}
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
