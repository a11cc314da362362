package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/builder-dev/builder/fixtures"
	"github.com/builder-dev/builder/internal/testenv"
)

// multiBase stores busybox:multi, an image index of Debian's busybox for
// amd64 and arm64 (a COPY-only build, which needs no emulator), and
// returns its build context.
func (e *e2eEnv) multiBase() string {
	e.t.Helper()
	dir := filepath.Join(e.dir, "base-multi")
	for _, arch := range []string{"amd64", "arm64"} {
		if err := fixtures.BusyboxRootfsArch(context.Background(), filepath.Join(dir, arch), arch); err != nil {
			testenv.SkipOrFail(e.t, "no %s busybox: %v", arch, err)
		}
	}
	e.write(dir, "Dockerfile", "FROM scratch AS base-amd64\nCOPY amd64/ /\nFROM scratch AS base-arm64\nCOPY arm64/ /\nFROM base-$TARGETARCH\nCMD [\"sh\"]\n")
	e.own(dir)
	e.mustRun("build", "--platform", "linux/amd64,linux/arm64", "-t", "busybox:multi", dir)
	return dir
}

// crossCompile is issue 11's fixture: a RUN on the target platform
// (emulated for arm64), and a build-platform stage that "cross-compiles"
// one file per TARGETARCH after a step that does not depend on it.
const crossCompile = `FROM --platform=$BUILDPLATFORM busybox:multi AS build
RUN echo fetched-once > /deps
ARG TARGETARCH
RUN mkdir /out && echo "binary for $TARGETARCH" > /out/app && cat /deps >> /out/app
FROM busybox:multi
RUN uname -m > /arch
COPY --from=build /out/app /app
`

// TestE2EMultiPlatform builds one Dockerfile for linux/amd64 and
// linux/arm64: an image index with both, each image with its platform's
// files (arm64's RUN under emulation), the build-platform stage's
// target-independent step run once; outputs of every kind; a push that
// Docker pulls and runs for arm64; a rebuild all from cache.
func TestE2EMultiPlatform(t *testing.T) {
	e := newEnv(t)
	requireEmulation(t, v1.Platform{OS: "linux", Architecture: "arm64"})
	testenv.RequireDocker(t)
	reg := startRegistry(t)
	e.multiBase()
	ctx := e.context(crossCompile, nil)
	out := filepath.Join(e.dir, "out")
	ociDir := filepath.Join(e.dir, "oci")
	meta := filepath.Join(e.dir, "meta.json")
	app := reg + "/app:multi"
	_, progress := e.mustRun("build", "--progress", "plain", "--platform", "linux/amd64,linux/arm64", "-t", app, "--push",
		"-o", "type=local,dest="+out, "-o", "type=oci,dest="+ociDir+",tar=false", "--metadata-file", meta, ctx)

	// Each platform's files.
	for _, p := range []struct{ dir, arch, target string }{{"linux_amd64", "x86_64", "amd64"}, {"linux_arm64", "aarch64", "arm64"}} {
		if got := readOut(t, out, p.dir+"/arch"); got != p.arch+"\n" {
			t.Errorf("%s/arch = %q, want %s", p.dir, got, p.arch)
		}
		if got := readOut(t, out, p.dir+"/app"); got != "binary for "+p.target+"\nfetched-once\n" {
			t.Errorf("%s/app = %q", p.dir, got)
		}
	}
	// FROM names the image index busybox:multi resolved to, as BuildKit.
	baseInspect, _ := e.mustRun("inspect", "busybox:multi")
	var base struct {
		Index string `json:"index"`
	}
	if err := json.Unmarshal([]byte(baseInspect), &base); err != nil || base.Index == "" {
		t.Fatalf("inspect busybox:multi: no index digest (%v):\n%s", err, baseInspect)
	}
	if want := "FROM docker.io/library/busybox:multi@" + base.Index; !strings.Contains(progress, want) {
		t.Errorf("progress does not name the base's index (%s):\n%s", want, progress)
	}
	// The build-platform stage's first RUN ran once for both platforms.
	if n := missesOf(progress, "RUN echo fetched-once"); n != 1 {
		t.Errorf("RUN echo fetched-once ran %d times, want once:\n%s", n, progress)
	}
	if n := missesOf(progress, "RUN mkdir /out"); n != 2 {
		t.Errorf("the TARGETARCH RUN ran %d times, want once per platform:\n%s", n, progress)
	}

	// The pushed index, the OCI output's and the local store's.
	wantPlatforms := []string{"linux/amd64", "linux/arm64"}
	if got := indexPlatforms(t, remoteIndex(t, app)); strings.Join(got, ",") != strings.Join(wantPlatforms, ",") {
		t.Errorf("pushed index platforms %v, want %v", got, wantPlatforms)
	}
	ociIdx := ociLayoutIndex(t, ociDir)
	if got := indexPlatforms(t, ociIdx); strings.Join(got, ",") != strings.Join(wantPlatforms, ",") {
		t.Errorf("OCI output's index platforms %v, want %v", got, wantPlatforms)
	}
	var m map[string]json.RawMessage
	if data, err := os.ReadFile(meta); err != nil || json.Unmarshal(data, &m) != nil {
		t.Fatalf("metadata file: %v", err)
	}
	var pushed string
	json.Unmarshal(m["containerimage.digest"], &pushed)
	if d := remoteDigest(t, app); pushed != d.String() {
		t.Errorf("metadata containerimage.digest %s, the registry has %s", pushed, d)
	}
	images, _ := e.mustRun("images")
	if !strings.Contains(images, "linux/amd64,linux/arm64") {
		t.Errorf("builder images does not list the platforms:\n%s", images)
	}
	inspect, _ := e.mustRun("inspect", "--platform", "linux/arm64", app)
	if !strings.Contains(inspect, `"architecture": "arm64"`) || !strings.Contains(inspect, `"index": "sha256:`) {
		t.Errorf("inspect --platform linux/arm64:\n%s", inspect)
	}
	hist, _ := e.mustRun("history", "--platform", "linux/arm64", "--format", "json", app)
	if !strings.Contains(hist, "uname -m") || !strings.Contains(hist, `"cache": "miss"`) {
		t.Errorf("history --platform linux/arm64:\n%s", hist)
	}

	// Docker pulls the arm64 image of the index and runs it emulated.
	docker(t, "pull", "--platform", "linux/arm64", app)
	if got := docker(t, "run", "--rm", "--network", "none", "--platform", "linux/arm64", app, "cat", "/arch"); got != "aarch64\n" {
		t.Errorf("docker run of the arm64 image: %q, want aarch64", got)
	}
	docker(t, "rmi", app)

	// A rebuild takes every step from the cache.
	_, progress = e.mustRun("build", "--progress", "plain", "--platform", "linux/amd64,linux/arm64", "-t", app, ctx)
	if strings.Contains(progress, "cache miss") {
		t.Errorf("rebuild missed the cache:\n%s", progress)
	}
	// One platform of several may not go to the Docker engine.
	if _, errOut, err := e.run("build", "--platform", "linux/amd64,linux/arm64", "--load", ctx); err == nil || !strings.Contains(errOut, "manifest lists") {
		t.Errorf("--load of two platforms: %v\n%s", err, errOut)
	}
}

// missesOf counts the steps of plain progress whose title contains what
// and that missed the cache (ran).
func missesOf(progress, what string) int {
	titles := map[string]string{}
	n := 0
	start := regexp.MustCompile(`^#(\d+) (\[.*)$`)
	done := regexp.MustCompile(`^#(\d+) DONE .*cache miss`)
	for _, line := range strings.Split(progress, "\n") {
		if m := start.FindStringSubmatch(line); m != nil {
			titles[m[1]] = m[2]
		}
		if m := done.FindStringSubmatch(line); m != nil && strings.Contains(titles[m[1]], what) {
			n++
		}
	}
	return n
}

func remoteIndex(t *testing.T, ref string) *v1.IndexManifest {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ociLayoutIndex reads the image index index.json of an OCI layout names.
func ociLayoutIndex(t *testing.T, dir string) *v1.IndexManifest {
	t.Helper()
	var top v1.IndexManifest
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil || json.Unmarshal(data, &top) != nil || len(top.Manifests) != 1 {
		t.Fatalf("index.json of %s: %v %s", dir, err, data)
	}
	d := top.Manifests[0].Digest
	data, err = os.ReadFile(filepath.Join(dir, "blobs", d.Algorithm, d.Hex))
	var idx v1.IndexManifest
	if err != nil || json.Unmarshal(data, &idx) != nil {
		t.Fatalf("index %s: %v", d, err)
	}
	return &idx
}

// indexPlatforms lists the platforms of an index's images, attestation
// manifests left out.
func indexPlatforms(t *testing.T, m *v1.IndexManifest) []string {
	t.Helper()
	var out []string
	for _, d := range m.Manifests {
		if d.Platform == nil || d.Platform.OS == "unknown" {
			continue
		}
		out = append(out, d.Platform.OS+"/"+d.Platform.Architecture)
	}
	return out
}

// TestE2EMultiPlatformCache: a two-platform build from a base image index
// in a registry exports one remote cache for both platforms; a fresh
// store (which pulls each platform's base image from the index) imports
// it and reuses every step of both, with each platform's files. The
// metadata file names the index and each platform's image.
func TestE2EMultiPlatformCache(t *testing.T) {
	e := newEnv(t)
	requireEmulation(t, v1.Platform{OS: "linux", Architecture: "arm64"})
	reg := startRegistry(t)
	e.multiBase()
	base := reg + "/base/busybox:multi"
	e.mustRun("push", "busybox:multi", base)
	ctx := e.context("FROM "+base+"\nRUN uname -m > /arch\nARG TARGETARCH\nRUN echo $TARGETARCH > /target\n", nil)
	cacheRef := reg + "/cache/multi:c"
	meta := filepath.Join(e.dir, "meta.json")
	e.mustRun("build", "--platform", "linux/amd64,linux/arm64", "--cache-to", "type=registry,ref="+cacheRef+",mode=max",
		"--metadata-file", meta, "-t", "multi:1", ctx)

	var m struct {
		Digest    string `json:"containerimage.digest"`
		Platforms []struct {
			Platform string `json:"platform"`
			Digest   string `json:"image.digest"`
			Config   string `json:"config.digest"`
		} `json:"platforms"`
	}
	if data, err := os.ReadFile(meta); err != nil || json.Unmarshal(data, &m) != nil {
		t.Fatalf("metadata file: %v", err)
	}
	inspect, _ := e.mustRun("inspect", "--platform", "linux/arm64", "multi:1")
	if len(m.Platforms) != 2 || m.Platforms[0].Platform != "linux/amd64" || m.Platforms[1].Platform != "linux/arm64" ||
		!strings.Contains(inspect, m.Platforms[1].Digest) || !strings.Contains(inspect, `"index": "`+m.Digest+`"`) {
		t.Errorf("metadata: index %s, platforms %+v; inspect of arm64:\n%s", m.Digest, m.Platforms, inspect)
	}

	fresh := e.fresh("root-fresh")
	out := filepath.Join(e.dir, "out")
	_, progress := fresh.mustRun("build", "--progress", "plain", "--platform", "linux/amd64,linux/arm64",
		"--cache-from", cacheRef, "-o", "type=local,dest="+out, ctx)
	if strings.Contains(progress, "cache miss") {
		t.Errorf("a fresh store with the remote cache ran steps:\n%s", progress)
	}
	for _, p := range []struct{ dir, arch, target string }{{"linux_amd64", "x86_64", "amd64"}, {"linux_arm64", "aarch64", "arm64"}} {
		if got := readOut(t, out, p.dir+"/arch"); got != p.arch+"\n" {
			t.Errorf("%s/arch = %q, want %s", p.dir, got, p.arch)
		}
		if got := readOut(t, out, p.dir+"/target"); got != p.target+"\n" {
			t.Errorf("%s/target = %q, want %s", p.dir, got, p.target)
		}
	}
}
