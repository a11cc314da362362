package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The cold-path work of issue 12 done by BuildKit: the same Dockerfile
// and context built by builder and by buildctl against $BUILDKIT_HOST
// (.ci/buildkitd.sh: buildkitd at go.mod's version, OCI worker, its state
// on the same disk), interleaved as the other cold benchmarks. BuildKit
// computes a layer's digest only when it exports it, so both export the
// result as an uncompressed OCI archive (compression would measure the
// compressors); the reference column is BuildKit's time.

// buildkitBench is a coldBench with buildctl, busybox:fixture as an OCI
// layout for buildkitd (--oci-layout), and a copy of the store holding
// only busybox:fixture.
type buildkitBench struct {
	*coldBench
	buildctl, addr string
	layout, index  string
	pristine       string
}

func newBuildkitBench(b *testing.B) *buildkitBench {
	b.Helper()
	c := newColdBench(b)
	k := &buildkitBench{coldBench: c}
	k.buildctl, k.addr = buildkitClient(b)
	base := filepath.Join(c.dir, "bkbase")
	writeBenchFile(b, filepath.Join(base, "Dockerfile"), "FROM busybox:fixture\n")
	k.layout = filepath.Join(c.dir, "bklayout")
	k.index = k.ociLayout(k.layout, base)
	k.pristine = filepath.Join(c.dir, "pristine")
	c.sh("cp -a " + c.root + " " + k.pristine)
	return k
}

// buildctlBuild builds the context dir (its Dockerfile, FROM
// busybox:fixture) with buildctl into the OCI archive out, with opts as
// extra --opt values (build-arg:N=1).
func (k *buildkitBench) buildctlBuild(dir, out string, opts ...string) {
	k.b.Helper()
	args := []string{"--addr", k.addr, "build", "--progress", "quiet",
		"--frontend", "dockerfile.v0", "--local", "context=" + dir, "--local", "dockerfile=" + dir,
		"--oci-layout", "fixture=" + k.layout, "--opt", "context:busybox:fixture=oci-layout://fixture@" + k.index,
		"--output", "type=oci,compression=uncompressed,dest=" + out}
	for _, o := range opts {
		args = append(args, "--opt", o)
	}
	if err := runBench(k.b.Context(), nil, k.buildctl, args...); err != nil {
		k.b.Fatal(err)
	}
}

// prune empties buildkitd's cache (untimed).
func (k *buildkitBench) prune() {
	k.b.Helper()
	if err := runBench(k.b.Context(), nil, k.buildctl, "--addr", k.addr, "prune", "--all"); err != nil {
		k.b.Fatal(err)
	}
}

// BenchmarkColdBuildKit: the cold COPY and the commit benchmarks'
// Dockerfiles, built by builder and by BuildKit into an uncompressed OCI
// archive. copy: nothing cached (builder from a store holding only the
// base, buildkitd after prune --all), a 20,000-file, 400 MiB context;
// BuildKit's time includes sending the context to the daemon, which is how
// it reads one. commit: only the RUN unpacking the 240 MB tar misses (a
// new build argument each time), for both. export: every step cached, a
// 1 GiB layer of random bytes written out.
func BenchmarkColdBuildKit(b *testing.B) {
	k := newBuildkitBench(b)
	out := filepath.Join(k.dir, "out.tar")
	b.Run("copy", func(b *testing.B) {
		ctxDir := filepath.Join(k.dir, "copy")
		writeDataTree(b, ctxDir, copyFiles, copyFileSize, copyPerDir)
		writeBenchFile(b, filepath.Join(ctxDir, "Dockerfile"), "FROM busybox:fixture\nCOPY . /app\n")
		root := func(i int) string { return filepath.Join(k.dir, fmt.Sprintf("bkroot%d", i)) }
		sideBySide(b, pair{
			name: "cold COPY of 20,000 files / 400 MiB, exported; reference: BuildKit",
			prepare: func(i int) {
				k.prune()
				k.sh(fmt.Sprintf("rm -f %s && cp -a %s %s", out, k.pristine, root(i)))
				k.syncAll()
			},
			builder: func(i int) {
				if err := runBench(b.Context(), nil, builderBin, "--root", root(i), "build", "--progress", "quiet",
					"-o", "type=oci,compression=uncompressed,dest="+out, ctxDir); err != nil {
					b.Fatal(err)
				}
			},
			reference: func(int) { k.buildctlBuild(ctxDir, out) },
		})
	})
	b.Run("commit", func(b *testing.B) {
		ctxDir := filepath.Join(k.dir, "commit")
		if err := os.MkdirAll(ctxDir, 0o755); err != nil {
			b.Fatal(err)
		}
		writeDataTar(b, filepath.Join(ctxDir, "data.tar"), commitFiles, commitFileSize, commitPerDir)
		writeBenchFile(b, filepath.Join(ctxDir, "Dockerfile"), "FROM busybox:fixture\nCOPY data.tar /data.tar\nARG N\nRUN mkdir /x && tar xf /data.tar -C /x && echo $N\n")
		build := func(i int) {
			k.builder("build", "--progress", "quiet", "--build-arg", fmt.Sprintf("N=%d", i),
				"-o", "type=oci,compression=uncompressed,dest="+out, ctxDir)
		}
		buildkit := func(i int) { k.buildctlBuild(ctxDir, out, fmt.Sprintf("build-arg:N=%d", i)) }
		build(-1) // the COPY is cached from here on, for both
		buildkit(-1)
		sideBySide(b, pair{
			name: "RUN tar x of 240 MB / 8,000 files + commit, exported; reference: BuildKit",
			prepare: func(int) {
				k.sh("rm -f " + out)
				k.syncAll()
			},
			builder:   build,
			reference: buildkit,
		})
	})
	b.Run("export", func(b *testing.B) {
		dir := filepath.Join(k.dir, "bkbig")
		writeBenchFile(b, filepath.Join(dir, "Dockerfile"), "FROM busybox:fixture\nRUN head -c 1073741824 /dev/urandom > /big\n")
		build := func(int) {
			k.builder("build", "--progress", "quiet", "-o", "type=oci,compression=uncompressed,dest="+out, dir)
		}
		buildkit := func(int) { k.buildctlBuild(dir, out) }
		build(-1)
		buildkit(-1)
		sideBySide(b, pair{
			name: "cached build, 1 GiB layer exported; reference: BuildKit",
			prepare: func(int) {
				k.sh("rm -f " + out)
				k.syncAll()
			},
			builder:   build,
			reference: buildkit,
		})
	})
}
