package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/builder-dev/builder/fixtures"
	"github.com/builder-dev/builder/internal/emulation"
	"github.com/builder-dev/builder/internal/testenv"
)

// platformBench is the two-platform build of issue 11's fixture, by
// builder and by buildctl against $BUILDKIT_HOST, from the same base: a
// two-platform busybox index, in builder's store and as an OCI layout.
type platformBench struct {
	*coldBench
	buildctl, addr string
	app            string // the build context
	layout, index  string // the base as an OCI layout, its index digest
	pristine       string // a store root holding only the base
}

func newPlatformBench(b *testing.B) *platformBench {
	b.Helper()
	c := newColdBench(b)
	if hst, err := emulation.Detect(); err != nil {
		testenv.SkipOrFail(b, "binfmt_misc: %v", err)
	} else if _, err := hst.CanRun(v1.Platform{OS: "linux", Architecture: "arm64"}); err != nil {
		testenv.SkipOrFail(b, "%v", err)
	}
	h := &platformBench{coldBench: c}
	h.buildctl, h.addr = buildkitClient(b)
	base := filepath.Join(c.dir, "base-multi")
	for _, arch := range []string{"amd64", "arm64"} {
		if err := fixtures.BusyboxRootfsArch(b.Context(), filepath.Join(base, arch), arch); err != nil {
			testenv.SkipOrFail(b, "no %s busybox: %v", arch, err)
		}
	}
	writeBenchFile(b, filepath.Join(base, "Dockerfile"), "FROM scratch AS base-amd64\nCOPY amd64/ /\nFROM scratch AS base-arm64\nCOPY arm64/ /\nFROM base-$TARGETARCH\n")
	h.layout = filepath.Join(c.dir, "layout")
	h.index = c.ociLayout(h.layout, base, "--platform", "linux/amd64,linux/arm64", "-t", "busybox:multi")
	h.pristine = filepath.Join(c.dir, "pristine")
	c.sh("cp -a " + c.root + " " + h.pristine)
	h.app = filepath.Join(c.dir, "app")
	writeBenchFile(b, filepath.Join(h.app, "Dockerfile"), crossCompile)
	return h
}

// ociLayout builds the Dockerfile in dir (with args) into an OCI layout
// directory, layout, for buildctl's --oci-layout, and returns the digest
// its index.json names.
func (c *coldBench) ociLayout(layout, dir string, args ...string) string {
	c.b.Helper()
	c.builder(append(append([]string{"build", "--progress", "quiet"}, args...), "-o", "type=oci,dest="+layout+",tar=false", dir)...)
	var top v1.IndexManifest
	data, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err == nil {
		err = json.Unmarshal(data, &top)
	}
	if err != nil || len(top.Manifests) != 1 {
		c.b.Fatalf("OCI layout %s: %v (%d manifests)", layout, err, len(top.Manifests))
	}
	return top.Manifests[0].Digest.String()
}

// buildkitClient returns buildctl ($BUILDCTL or on PATH) and the address
// of the running buildkitd ($BUILDKIT_HOST); it skips (fails when CI=true)
// without them.
func buildkitClient(b testing.TB) (buildctl, addr string) {
	b.Helper()
	addr = os.Getenv("BUILDKIT_HOST")
	if addr == "" {
		testenv.SkipOrFail(b, `BUILDKIT_HOST is not set; start a buildkitd with: eval "$(.ci/buildkitd.sh)"`)
	}
	buildctl = os.Getenv("BUILDCTL")
	if buildctl == "" {
		p, err := exec.LookPath("buildctl")
		if err != nil {
			testenv.SkipOrFail(b, "buildctl not found ($BUILDCTL, PATH)")
		}
		buildctl = p
	}
	return buildctl, addr
}

// buildBuilder is builder's two-platform build into an OCI archive.
func (h *platformBench) buildBuilder(int) {
	h.builder("build", "--progress", "quiet", "--platform", "linux/amd64,linux/arm64",
		"-o", "type=oci,dest="+filepath.Join(h.dir, "builder.tar"), h.app)
}

// buildBuildkit is the same build by buildctl.
func (h *platformBench) buildBuildkit(int) {
	h.b.Helper()
	err := runBench(h.b.Context(), nil, h.buildctl, "--addr", h.addr, "build", "--progress", "quiet",
		"--frontend", "dockerfile.v0", "--opt", "cmdline=",
		"--local", "context="+h.app, "--local", "dockerfile="+h.app,
		"--opt", "platform=linux/amd64,linux/arm64",
		"--oci-layout", "multibase="+h.layout, "--opt", "context:busybox:multi=oci-layout://multibase@"+h.index,
		"--output", "type=oci,dest="+filepath.Join(h.dir, "buildkit.tar"))
	if err != nil {
		h.b.Fatal(err)
	}
}

// BenchmarkPlatformsCold: a two-platform build (arm64's RUN emulated)
// with nothing cached, builder from a store holding only the base,
// buildkitd after `buildctl prune --all`; both export an OCI archive.
func BenchmarkPlatformsCold(b *testing.B) {
	h := newPlatformBench(b)
	sideBySide(b, pair{
		name: "two-platform build, cold",
		prepare: func(int) {
			if err := runBench(b.Context(), nil, h.buildctl, "--addr", h.addr, "prune", "--all"); err != nil {
				b.Fatal(err)
			}
			h.sh("rm -rf " + h.root + " && cp -a " + h.pristine + " " + h.root)
			h.syncAll()
		},
		builder:   h.buildBuilder,
		reference: h.buildBuildkit,
	})
}

// BenchmarkPlatformsCached: the same build again, every step cached, for
// both tools.
func BenchmarkPlatformsCached(b *testing.B) {
	h := newPlatformBench(b)
	h.buildBuilder(0)
	h.buildBuildkit(0)
	sideBySide(b, pair{
		name:      "two-platform build, cached",
		prepare:   func(int) { h.syncAll() },
		builder:   h.buildBuilder,
		reference: h.buildBuildkit,
	})
}
