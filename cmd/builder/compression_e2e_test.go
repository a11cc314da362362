package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/klauspost/compress/zstd"
)

// remoteImage reads ref from a local registry with go-containerregistry.
func remoteImage(t testing.TB, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatalf("read %s: %v", ref, err)
	}
	return img
}

// mustManifest reads the manifest of ref from its registry.
func mustManifest(t *testing.T, ref string) *v1.Manifest {
	t.Helper()
	m, err := remoteImage(t, ref).Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// layerTypes lists the media types of img's layers.
func layerTypes(t *testing.T, img v1.Image) []types.MediaType {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []types.MediaType
	for _, l := range m.Layers {
		out = append(out, l.MediaType)
	}
	return out
}

func allOf(mts []types.MediaType, want types.MediaType) bool {
	for _, mt := range mts {
		if mt != want {
			return false
		}
	}
	return len(mts) > 0
}

// skopeoLayerTypes reads the manifest of ref (plain HTTP) with skopeo
// inspect --raw and returns the media types of its layers.
func skopeoLayerTypes(t *testing.T, ref string) []string {
	t.Helper()
	if _, err := exec.LookPath("skopeo"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but skopeo is missing (apt-get install skopeo): %v", err)
		}
		t.Logf("skopeo missing, not checked: %v", err)
		return nil
	}
	out, err := exec.Command("skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+ref).Output()
	if err != nil {
		t.Fatalf("skopeo inspect %s: %v", ref, err)
	}
	var m struct {
		Layers []struct {
			MediaType string `json:"mediaType"`
		} `json:"layers"`
		Manifests []struct { // an index (a push with attestations): its image first
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("skopeo inspect %s: %v\n%s", ref, err, out)
	}
	if len(m.Manifests) > 0 {
		repo, _, _ := strings.Cut(ref, "@")
		if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
			repo = repo[:i]
		}
		return skopeoLayerTypes(t, repo+"@"+m.Manifests[0].Digest)
	}
	var mts []string
	for _, l := range m.Layers {
		mts = append(mts, l.MediaType)
	}
	if len(mts) == 0 {
		t.Fatalf("skopeo inspect %s lists no layers:\n%s", ref, out)
	}
	return mts
}

// TestE2ECompressionZstd: -o type=registry,compression=zstd pushes an
// image whose layers are zstd (go-containerregistry's validate.Image
// reads every blob and checks digests and diffIDs; skopeo inspect agrees),
// the same bytes whatever GOMAXPROCS, remembered so a second push
// compresses and uploads nothing; builder pulls it back and builds FROM
// it; gzip stays the default; --cache-to takes compression=zstd too.
func TestE2ECompressionZstd(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	// The last layer is random bytes: zstd's stream mode (incompressible).
	ctx := e.context("FROM busybox:fixture\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt && echo built >> /b.txt\n"+
		"RUN head -c 6000000 /dev/urandom > /random.bin\n",
		map[string]string{"a.txt": "hello\n"})
	zref := reg + "/app:zstd"
	_, errOut := e.mustRun("build", "--progress", "plain", "-t", "app:v1", "-o", "type=registry,name="+zref+",compression=zstd,compression-level=3", ctx)
	if !strings.Contains(errOut, "(zstd-3)") || !strings.Contains(errOut, "pushed "+zref) {
		t.Errorf("build output:\n%s", errOut)
	}
	img := remoteImage(t, zref)
	checkZstdImage(t, img)
	if mts := layerTypes(t, img); !allOf(mts, types.OCILayerZStd) {
		t.Errorf("%s layers %v, want all %s", zref, mts, types.OCILayerZStd)
	}
	for _, mt := range skopeoLayerTypes(t, zref) {
		if mt != string(types.OCILayerZStd) {
			t.Errorf("skopeo inspect %s: layer type %s, want zstd", zref, mt)
		}
	}
	zdigest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}

	// A second push compresses and uploads nothing.
	_, errOut = e.mustRun("build", "--progress", "plain", "-o", "type=registry,name="+zref+",compression=zstd,compression-level=3", ctx)
	if strings.Contains(errOut, "compressing") || strings.Contains(errOut, "uploading") {
		t.Errorf("second zstd push did work again:\n%s", errOut)
	}

	// Forget the compressed copies and push with one CPU: same bytes.
	zstdRecords, _ := filepath.Glob(filepath.Join(e.root, "compressed", "*.zstd-3.json"))
	if len(zstdRecords) == 0 {
		t.Fatalf("no zstd-3 compressed records in %s", filepath.Join(e.root, "compressed"))
	}
	for _, p := range zstdRecords {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	one := reg + "/app:zstd-1cpu"
	cmd := exec.Command(builderBin, "--root", e.root, "build", "--progress", "plain", "-o", "type=registry,name="+one+",compression=zstd,compression-level=3", ctx)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "compressing") {
		t.Fatalf("push with GOMAXPROCS=1: %v\n%s", err, out)
	}
	if d, err := remoteImage(t, one).Digest(); err != nil || d != zdigest {
		t.Errorf("zstd push with GOMAXPROCS=1 is %s (%v), with all CPUs %s", d, err, zdigest)
	}

	// gzip is the default.
	gref := reg + "/app:gzip"
	e.mustRun("build", "-o", "type=registry,name="+gref, ctx)
	gimg := remoteImage(t, gref)
	if mts := layerTypes(t, gimg); !allOf(mts, types.OCILayer) {
		t.Errorf("%s layers %v, want all gzip (%s)", gref, mts, types.OCILayer)
	}
	if err := validate.Image(gimg); err != nil {
		t.Errorf("validate.Image(%s): %v", gref, err)
	}

	// builder's own pull: a fresh store, same digest, usable as a base.
	c := e.fresh("root-pull")
	out, _ := c.mustRun("pull", zref)
	if !strings.Contains(out, "Digest: "+zdigest.String()) {
		t.Errorf("pull printed %q, want digest %s", out, zdigest)
	}
	dir := filepath.Join(e.dir, "out")
	c.mustRun("build", "-o", "type=local,dest="+dir, e.context("FROM "+zref+"\nRUN cat /b.txt > /c.txt\n", nil))
	if got, err := os.ReadFile(filepath.Join(dir, "c.txt")); err != nil || string(got) != "hello\nbuilt\n" {
		t.Errorf("c.txt = %q, %v; want the pulled image's /b.txt", got, err)
	}

	// --cache-to with zstd; a fresh store builds everything from it.
	base := reg + "/busybox:fixture"
	e.mustRun("push", "busybox:fixture", base)
	cctx := e.context("FROM "+base+"\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n", map[string]string{"a.txt": "cached\n"})
	cref := reg + "/cache:zstd"
	e.mustRun("build", "--cache-to", "type=registry,ref="+cref+",mode=max,compression=zstd", cctx)
	if mts := layerTypes(t, remoteImage(t, cref)); !allOf(mts, types.OCILayerZStd) {
		t.Errorf("cache %s layers %v, want zstd", cref, mts)
	}
	f := e.fresh("root-cache")
	_, errOut = f.mustRun("build", "--progress", "plain", "--cache-from", cref, cctx)
	if strings.Count(errOut, "CACHED (from "+cref+")") != 2 {
		t.Errorf("build from the zstd cache did not hit it:\n%s", errOut)
	}
}

// checkZstdImage validates img with go-containerregistry's validate.Image
// in its Fast mode (manifest, config, every layer present), because its
// full mode gunzips every layer (go-containerregistry v0.22's
// validate.computeLayer knows only gzip), and then checks each layer
// itself: zstd media type, compressed digest and size, diffID of the
// decompressed tar as the config lists it, a tar that reads to its end.
func checkZstdImage(t *testing.T, img v1.Image) {
	t.Helper()
	if err := validate.Image(img, validate.Fast); err != nil {
		t.Errorf("validate.Image: %v", err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		t.Fatalf("%d diffIDs for %d layers", len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	for i, desc := range m.Layers {
		if desc.MediaType != types.OCILayerZStd {
			t.Errorf("layer %d: media type %s, want %s", i, desc.MediaType, types.OCILayerZStd)
			continue
		}
		l, err := img.LayerByDigest(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if d, size, _ := v1.SHA256(bytes.NewReader(data)); d != desc.Digest || size != desc.Size {
			t.Errorf("layer %d: blob %s of %d bytes, manifest says %s of %d", i, d, size, desc.Digest, desc.Size)
		}
		zr, err := zstd.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		tr := tar.NewReader(io.TeeReader(zr, h))
		for {
			if _, err := tr.Next(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("layer %d: tar: %v", i, err)
			}
		}
		if _, err := io.Copy(h, zr); err != nil {
			t.Fatalf("layer %d: zstd: %v", i, err)
		}
		zr.Close()
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != cfg.RootFS.DiffIDs[i].String() {
			t.Errorf("layer %d: decompressed tar is %s, config lists %s", i, got, cfg.RootFS.DiffIDs[i])
		}
	}
}

// TestE2EOCIArchiveAndCacheCompressOnce: a build with -o type=oci and
// --cache-to of the same compression compresses each built layer once,
// into the store, for both: the cache export then compresses nothing, and
// the archive's layer is the cache's blob.
func TestE2EOCIArchiveAndCacheCompressOnce(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nRUN head -c 300000 /dev/urandom > /r\n", nil)
	for _, comp := range []string{"gzip", "zstd"} {
		oci := filepath.Join(e.dir, comp+".oci.tar")
		cacheDir := filepath.Join(e.dir, comp+"-cache")
		_, errOut := e.mustRun("build", "--no-cache", "--progress", "plain", "-o", "type=oci,compression="+comp+",dest="+oci,
			"--cache-to", "type=local,mode=max,compression="+comp+",dest="+cacheDir, ctx)
		if strings.Contains(errOut, "compressing layer") {
			t.Errorf("%s: a layer was compressed again for the cache after the archive:\n%s", comp, errOut)
		}
		layers := ociArchiveLayers(t, oci)
		built := strings.TrimPrefix(layers[len(layers)-1], "sha256:")
		if _, err := os.Stat(filepath.Join(cacheDir, "blobs", "sha256", built)); err != nil {
			t.Errorf("%s: the archive's built layer %s is not the cache's blob: %v", comp, built, err)
		}
	}
}

func TestParseCompressionOptions(t *testing.T) {
	outs, err := parseOutputs([]string{"type=oci,dest=a.tar,compression=zstd,compression-level=19,force-compression=true"})
	if err != nil || len(outs) != 1 || outs[0].comp.String() != "zstd-19" || !outs[0].comp.Force {
		t.Errorf("oci output: %+v, %v", outs, err)
	}
	for _, c := range []struct{ in, wantErr string }{
		{"type=docker,dest=a.tar,compression=zstd", "compression options belong to type=oci, image or registry"},
		{"type=oci,dest=a.tar,compression=brotli", `compression="brotli"`},
		{"type=registry,name=localhost:5000/a,compression-level=30", "gzip takes 0-9"},
	} {
		if _, err := parseOutputs([]string{c.in}); err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: error %v, want %q", c.in, err, c.wantErr)
		}
	}
	specs, err := parseCacheSpecs([]string{"type=registry,ref=localhost:5000/c,compression=uncompressed"}, cacheExport)
	if err != nil || len(specs) != 1 || specs[0].comp.String() != "uncompressed" {
		t.Errorf("--cache-to: %+v, %v", specs, err)
	}
	if _, err := parseCacheSpecs([]string{"type=registry,ref=localhost:5000/c,compression=zstd"}, cacheImport); err == nil || !strings.Contains(err.Error(), "belongs to --cache-to") {
		t.Errorf("--cache-from with compression=: %v", err)
	}
}
