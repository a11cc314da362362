package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/fixtures"
	"github.com/builder-dev/builder/internal/testenv"
)

// The benchmarks in this file run builder and Docker's two builders as
// whole processes over the same Dockerfile and context, with warm caches,
// so `make bench` prints them side by side. Docker is Debian's 20.10
// daemon: DOCKER_BUILDKIT=1 selects its embedded BuildKit, DOCKER_BUILDKIT=0
// the classic builder. Every tool's sub-benchmark after builder's reports
// x-builder: its mean time over builder's (above 1: builder is faster).

const (
	srcFiles  = 2000 // files of the source tree COPYed by the rebuild benchmark
	srcPerDir = 50
)

// benchTool builds a context directory with one builder: builder itself or
// one of Docker's.
type benchTool struct {
	name  string
	build func(ctx context.Context, dir string, args ...string) error
}

// dockerBench is a builder store and a Docker daemon that both hold the
// busybox base image under a tag of this run.
type dockerBench struct {
	b    *testing.B
	root string // builder's store
	dir  string // scratch space
	base string // base image reference in both stores
	tag  string // tag of the images the benchmarks build
	iids []string
}

// requireBenchDocker skips without root or a usable Docker daemon, and
// fails instead when CI=true.
func requireBenchDocker(b *testing.B) {
	b.Helper()
	testenv.RequireRoot(b)
	testenv.RequireDocker(b)
}

// newDockerBench builds busybox:fixture into a fresh builder store, saves
// it with `builder save` and loads it into Docker under a tag unique to
// this run, removed (with every image the benchmark built) at the end.
func newDockerBench(b *testing.B) *dockerBench {
	b.Helper()
	requireBenchDocker(b)
	dir := b.TempDir()
	id := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	d := &dockerBench{b: b, root: filepath.Join(dir, "root"), dir: dir,
		base: "builder-bench-base:" + id, tag: "builder-bench:" + id}
	baseCtx := filepath.Join(dir, "base")
	if err := fixtures.BusyboxRootfs(b.Context(), filepath.Join(baseCtx, "rootfs")); err != nil {
		b.Fatalf("busybox rootfs: %v", err)
	}
	writeBenchFile(b, filepath.Join(baseCtx, "Dockerfile"), "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n")
	d.builder("build", "--progress", "quiet", "-t", "busybox:fixture", baseCtx)
	d.builder("tag", "busybox:fixture", d.base)
	saved := filepath.Join(dir, "base.tar")
	d.builder("save", "-o", saved, d.base)
	d.docker("load", "-i", saved)
	b.Cleanup(d.cleanup)
	return d
}

// cleanup removes from Docker the images this run built and tagged.
func (d *dockerBench) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"rmi", "-f", d.tag, d.base}, d.iids...)
	// Errors are expected here: an image may already be gone with its tag.
	_ = exec.CommandContext(ctx, testenv.DockerBin, args...).Run()
}

// builder runs builder --root ROOT args... and fails the benchmark on error.
func (d *dockerBench) builder(args ...string) {
	d.b.Helper()
	if err := runBench(d.b.Context(), nil, builderBin, append([]string{"--root", d.root}, args...)...); err != nil {
		d.b.Fatal(err)
	}
}

// docker runs the docker client and fails the benchmark on error.
func (d *dockerBench) docker(args ...string) {
	d.b.Helper()
	if err := runBench(d.b.Context(), nil, testenv.DockerBin, args...); err != nil {
		d.b.Fatal(err)
	}
}

// tools returns builder, Docker's BuildKit and Docker's classic builder,
// each building a context into d.tag with --network none; extra arguments
// (--build-arg, -o) go before the context.
func (d *dockerBench) tools() []benchTool {
	return []benchTool{
		{"builder", func(ctx context.Context, dir string, args ...string) error {
			argv := append([]string{"--root", d.root, "build", "--progress", "quiet", "--network", "none", "-t", d.tag}, args...)
			return runBench(ctx, nil, builderBin, append(argv, dir)...)
		}},
		{"buildkit", d.dockerTool("1")},
		{"classic", d.dockerTool("0")},
	}
}

// dockerTool builds with Docker; buildkit is DOCKER_BUILDKIT's value. The
// image IDs are kept so cleanup can remove images that lost their tag.
func (d *dockerBench) dockerTool(buildkit string) func(ctx context.Context, dir string, args ...string) error {
	env := append(os.Environ(), "DOCKER_BUILDKIT="+buildkit)
	return func(ctx context.Context, dir string, args ...string) error {
		iid := filepath.Join(d.dir, "iid")
		argv := append([]string{"build", "-q", "--network", "none", "--iidfile", iid, "-t", d.tag}, args...)
		if err := runBench(ctx, env, testenv.DockerBin, append(argv, dir)...); err != nil {
			return err
		}
		if id, err := os.ReadFile(iid); err == nil {
			d.iids = append(d.iids, strings.TrimSpace(string(id)))
		}
		return nil
	}
}

// runBench runs name args... with env (nil: inherited) and returns an
// error naming the command and the tail of its output.
func runBench(ctx context.Context, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("run %s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, lastLines(string(out), 15))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func writeBenchFile(b *testing.B, p, content string) {
	b.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		b.Fatal(err)
	}
}

// rebuildScenario is one kind of rebuild: change prepares iteration i
// (untimed) before the timed build.
type rebuildScenario struct {
	name   string
	change func(b *testing.B, i int)
}

// BenchmarkDockerRebuild measures three warm rebuilds of a realistic
// project — COPY of a 2,000-file source tree, a RUN that tars and gzips it,
// a final COPY of one file — by builder, Docker's BuildKit and Docker's
// classic builder: (1) a no-op rebuild, (2) after one source file changed
// (every step from the source COPY on misses), (3) after only the file of
// the last COPY changed (one small COPY misses).
func BenchmarkDockerRebuild(b *testing.B) {
	d := newDockerBench(b)
	ctxDir := filepath.Join(d.dir, "project")
	writeSourceTree(b, ctxDir)
	writeBenchFile(b, filepath.Join(ctxDir, "Dockerfile"), fmt.Sprintf(`FROM %s
WORKDIR /src
COPY src/ /src/
RUN mkdir -p /out && tar -czf /out/src.tgz -C /src . && sha256sum /out/src.tgz > /out/src.sum
COPY VERSION /out/VERSION
CMD ["cat", "/out/src.sum"]
`, d.base))
	seq := 0 // never repeat a content, or a Docker cache of an earlier state would hit
	edit := func(name string) func(b *testing.B, i int) {
		return func(b *testing.B, i int) {
			seq++
			writeBenchFile(b, filepath.Join(ctxDir, name), fmt.Sprintf("// edit %d at %d\n%s", seq, time.Now().UnixNano(), sourceFile(7)))
		}
	}
	scenarios := []rebuildScenario{
		{"noop", func(*testing.B, int) {}},
		{"one-source-file", edit("src/d07/f0357.go")},
		{"last-copy", edit("VERSION")},
	}
	for _, s := range scenarios {
		b.Run(s.name, func(b *testing.B) {
			var builderMean time.Duration
			for _, tool := range d.tools() {
				b.Run(tool.name, func(b *testing.B) {
					mean := timeRebuilds(b, tool, ctxDir, s.change)
					if tool.name == "builder" {
						builderMean = mean
					} else if builderMean > 0 {
						b.ReportMetric(float64(mean)/float64(builderMean), "x-builder")
					}
				})
			}
		})
	}
}

// timeRebuilds builds once untimed (warming the tool's cache on the current
// context), then for each iteration applies change untimed and times the
// build. It returns the mean over the iterations it timed.
func timeRebuilds(b *testing.B, tool benchTool, dir string, change func(*testing.B, int)) time.Duration {
	ctx := b.Context()
	if err := tool.build(ctx, dir); err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		change(b, n)
		b.StartTimer()
		start := time.Now()
		if err := tool.build(ctx, dir); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		n++
	}
	return total / time.Duration(n)
}

// writeSourceTree writes dir/src with srcFiles source-like text files of
// 2-6 KiB in directories of srcPerDir, and dir/VERSION.
func writeSourceTree(b *testing.B, dir string) {
	b.Helper()
	for i := range srcFiles {
		sub := filepath.Join(dir, "src", fmt.Sprintf("d%02d", i/srcPerDir))
		if i%srcPerDir == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%04d.go", i)), []byte(sourceFile(uint64(i))), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	writeBenchFile(b, filepath.Join(dir, "VERSION"), "1.0.0\n")
}

// sourceFile returns 2-6 KiB of Go-like text, the same for the same seed.
func sourceFile(seed uint64) string {
	rng := rand.New(rand.NewPCG(seed, 42))
	var sb strings.Builder
	fmt.Fprintf(&sb, "package p%d\n\n", seed%50)
	size := 2048 + rng.IntN(4096)
	for sb.Len() < size {
		a, c := rng.IntN(1000), rng.IntN(1<<20)
		fmt.Fprintf(&sb, "func f%d_%d(x int) int {\n\treturn x*%d + %d // %x\n}\n\n", seed, a, a, c, rng.Uint64())
	}
	return sb.String()
}

const (
	bigFiles    = 200
	bigFileSize = 1 << 20 // 200 × 1 MiB of random bytes: a ~200 MB layer
)

// writeBigContext writes dir/data with bigFiles files of bigFileSize random
// (incompressible) bytes and the Dockerfile df.
func writeBigContext(b *testing.B, dir, df string) {
	b.Helper()
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, bigFileSize)
	for i := range bigFiles {
		_, _ = rng.Read(buf) // never fails
		writeBenchFile(b, filepath.Join(dir, "data", fmt.Sprintf("blob%03d", i)), string(buf))
	}
	writeBenchFile(b, filepath.Join(dir, "Dockerfile"), df)
}

// BenchmarkExportDocker measures writing a ~200 MB image as a docker-save
// tar: `builder build -o type=docker,dest=F` of a fully cached build,
// `builder save`, and `docker save` of the same image loaded into Docker
// (Docker 20.10's BuildKit has no type=docker output without buildx). MB/s
// is the tar's size over the mean time of the whole process.
func BenchmarkExportDocker(b *testing.B) {
	d := newDockerBench(b)
	ctxDir := filepath.Join(d.dir, "big")
	writeBigContext(b, ctxDir, fmt.Sprintf("FROM %s\nCOPY data/ /data/\n", d.base))
	d.builder("build", "--progress", "quiet", "-t", d.tag, ctxDir)
	out := filepath.Join(d.dir, "out.tar")
	d.builder("save", "-o", out, d.tag)
	d.docker("load", "-i", out)
	exports := []struct {
		name string
		run  func(ctx context.Context) error
	}{
		{"builder", func(ctx context.Context) error {
			return runBench(ctx, nil, builderBin, "--root", d.root, "build", "--progress", "quiet", "-o", "type=docker,dest="+out, ctxDir)
		}},
		{"builder-save", func(ctx context.Context) error {
			return runBench(ctx, nil, builderBin, "--root", d.root, "save", "-o", out, d.tag)
		}},
		{"docker-save", func(ctx context.Context) error {
			return runBench(ctx, nil, testenv.DockerBin, "save", "-o", out, d.tag)
		}},
	}
	var builderMean time.Duration
	for _, x := range exports {
		b.Run(x.name, func(b *testing.B) {
			var total time.Duration
			n := 0
			for b.Loop() {
				b.StopTimer()
				if err := os.Remove(out); err != nil && !os.IsNotExist(err) {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				if err := x.run(b.Context()); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				n++
			}
			mean := total / time.Duration(n)
			fi, err := os.Stat(out)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(fi.Size())/1e6/mean.Seconds(), "MB/s")
			if x.name == "builder" {
				builderMean = mean
			} else if x.name == "docker-save" && builderMean > 0 {
				b.ReportMetric(float64(mean)/float64(builderMean), "x-builder")
			}
		})
	}
}

// BenchmarkLayerDiff measures committing a ~200 MB, 200-file layer made by
// RUN: only the RUN misses (a new build arg each iteration), and it copies
// a directory an earlier, cached COPY put in the image. The RUN's own copy
// is the same work for every tool; the rest is each tool's diff of the
// step into a layer and its commit. MB/s is the layer's content over the
// mean time of the whole build.
func BenchmarkLayerDiff(b *testing.B) {
	d := newDockerBench(b)
	ctxDir := filepath.Join(d.dir, "big")
	writeBigContext(b, ctxDir, fmt.Sprintf("FROM %s\nCOPY data/ /data/\nARG N\nRUN echo $N > /n && cp -a /data /copy\n", d.base))
	seq := 0 // a new value every build, so the RUN always misses
	var builderMean time.Duration
	for _, tool := range d.tools() {
		b.Run(tool.name, func(b *testing.B) {
			build := func() {
				seq++
				if err := tool.build(b.Context(), ctxDir, "--build-arg", fmt.Sprintf("N=%d-%d", seq, time.Now().UnixNano())); err != nil {
					b.Fatal(err)
				}
			}
			build() // warm: the COPY is cached from here on
			var total time.Duration
			n := 0
			for b.Loop() {
				start := time.Now()
				build()
				total += time.Since(start)
				n++
			}
			mean := total / time.Duration(n)
			b.ReportMetric(float64(bigFiles*bigFileSize)/1e6/mean.Seconds(), "MB/s")
			if tool.name == "builder" {
				builderMean = mean
			} else if builderMean > 0 {
				b.ReportMetric(float64(mean)/float64(builderMean), "x-builder")
			}
		})
	}
}
