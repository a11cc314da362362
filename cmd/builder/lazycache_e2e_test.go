package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// reproBase builds the busybox rootfs of e as busybox:repro with
// SOURCE_DATE_EPOCH=0, so stores that share e's scratch space get the same
// base image digest and the same cache keys without pulling anything.
func (e *e2eEnv) reproBase() {
	e.t.Helper()
	e.mustRun("build", "--build-arg", "SOURCE_DATE_EPOCH=0", "-t", "busybox:repro", filepath.Join(e.dir, "base"))
}

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

// TestE2ELazyCacheImport, counted at the registry: layers hit in a
// --cache-from registry cache are fetched only when something needs their
// bytes. A fully cached build pushed to the registry that holds the cache
// downloads and uploads no layer blob (the push skips them: one HEAD
// each); a fully cached build whose result is not exported downloads only
// the cache's manifest and config, and its image can still be saved (the
// save fetches the layers then) and passes fsck; a partly cached build
// downloads exactly the layers under its first miss. The build reports
// the bytes and seconds of the import.
func TestE2ELazyCacheImport(t *testing.T) {
	e := newEnv(t)
	p := startRegProxy(t, startRegistry(t))
	e.reproBase()
	df := "FROM busybox:repro\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\nRUN echo %s > /c.txt\n"
	files := map[string]string{"a.txt": "lazy\n"}
	ctx := e.context(strings.Replace(df, "%s", "one", 1), files)
	cache := p.Addr + "/app:cache"
	e.mustRun("build", "--cache-to", "type=registry,ref="+cache+",mode=max", "-t", p.Addr+"/app:v1", "--push", ctx)
	cacheLayers := layerDigestStrings(t, cache)
	if len(cacheLayers) != 3 {
		t.Fatalf("cache holds %d layers, want 3", len(cacheLayers))
	}

	// Fully cached, pushed to the registry of the cache.
	f := e.fresh("root-push")
	f.reproBase()
	before := f.layerDirs()
	p.reset()
	_, errOut := f.mustRun("build", "--progress", "plain", "--cache-from", cache, "-t", p.Addr+"/app:v2", "--push", ctx)
	if strings.Count(errOut, "CACHED (from "+cache+")") != 3 {
		t.Errorf("not every step came from the cache:\n%s", errOut)
	}
	if got, n := p.blobDownloads(); len(intersect(got, cacheLayers)) != 0 {
		t.Errorf("fully cached build with --push downloaded layer blobs %v (%d bytes)", intersect(got, cacheLayers), n)
	}
	if up := intersect(p.uploads(), layerDigestStrings(t, p.Addr+"/app:v2")); len(up) != 0 {
		t.Errorf("fully cached build with --push uploaded layer blobs %v", up)
	}
	if !strings.Contains(errOut, "remote cache: imported ") || !strings.Contains(errOut, "(0 layers)") {
		t.Errorf("the build does not report a lazy import of no layer:\n%s", errOut)
	}
	if after := f.layerDirs(); len(after) != len(before) {
		t.Errorf("layers unpacked by a fully cached build: %v, before %v", after, before)
	}

	// Fully cached, not exported: manifests and configs only; the image
	// is usable (fsck, save fetches its layers).
	n := e.fresh("root-noexport")
	n.reproBase()
	p.reset()
	meta := filepath.Join(e.dir, "noexport.json")
	n.mustRun("build", "--cache-from", cache, "--metadata-file", meta, ctx)
	if got, _ := p.blobDownloads(); len(intersect(got, cacheLayers)) != 0 {
		t.Errorf("build not exported downloaded layer blobs %v", intersect(got, cacheLayers))
	}
	n.mustRun("fsck")
	digest := readMetadata(t, meta).Digest
	n.mustRun("save", "-o", filepath.Join(e.dir, "noexport.tar"), digest)
	if got, _ := p.blobDownloads(); len(intersect(got, cacheLayers)) != 3 {
		t.Errorf("save of the lazily built image fetched %v, want the cache's 3 layers", intersect(got, cacheLayers))
	}
	n.mustRun("fsck")

	// Partly cached: the last RUN changes; only the layers under it are
	// fetched (the COPY's and the first RUN's), not the cached last one.
	g := e.fresh("root-partial")
	g.reproBase()
	p.reset()
	ctx2 := e.context(strings.Replace(df, "%s", "two", 1), files)
	_, errOut = g.mustRun("build", "--progress", "plain", "--cache-from", cache, ctx2)
	got, _ := p.blobDownloads()
	if fetched := intersect(got, cacheLayers); len(fetched) != 2 || slices.Contains(fetched, cacheLayers[2]) {
		t.Errorf("partly cached build fetched %v of the cache's layers %v, want the first two", fetched, cacheLayers)
	}
	if !strings.Contains(errOut, "(2 layers)") {
		t.Errorf("the build does not report fetching 2 layers:\n%s", errOut)
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
