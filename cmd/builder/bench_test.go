package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/testenv"
)

const (
	benchFiles    = 20000
	benchFileSize = 20 << 10 // 20,000 × 20 KiB ≈ 400 MB
	benchPerDir   = 200
)

// BenchmarkNoopRebuild measures a no-op rebuild (every step a cache hit) of
// a 20,000-file, ~400 MB context copied by `COPY . /app`, as a whole
// `builder build` process: with a cold hash memo (every file read and
// hashed again) and a warm one (stat only), beside a stat walk of the same
// tree by find(1). Issue #4's target: warm within 3× of the stat walk.
func BenchmarkNoopRebuild(b *testing.B) {
	testenv.RequireRoot(b)
	tmp := b.TempDir()
	ctxDir := filepath.Join(tmp, "ctx")
	if err := writeBenchContext(ctxDir); err != nil {
		b.Fatal(err)
	}
	root := filepath.Join(tmp, "root")
	build := func() {
		out, err := exec.Command(builderBin, "--root", root, "build", "--progress", "quiet", ctxDir).CombinedOutput()
		if err != nil {
			b.Fatalf("builder build: %v\n%s", err, out)
		}
	}
	start := time.Now()
	build() // cold: copies the context into a layer
	b.Logf("first build of the %d-file context: %v", benchFiles, time.Since(start))

	var walk, warm time.Duration
	// walk and warm are means over the iterations counted here: b.N is
	// not the iteration count of a b.Loop benchmark.
	b.Run("statwalk", func(b *testing.B) {
		walk = 0
		n := 0
		for b.Loop() {
			t := time.Now()
			out, err := exec.Command("find", ctxDir, "-printf", `%s %T@ %C@ %i\n`).Output()
			if err != nil || len(out) == 0 {
				b.Fatalf("find: %v", err)
			}
			walk += time.Since(t)
			n++
		}
		walk /= time.Duration(n)
	})
	b.Run("cold-memo", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			if err := os.RemoveAll(filepath.Join(root, "hashes")); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			build()
		}
	})
	b.Run("warm-memo", func(b *testing.B) {
		build() // make sure the memo is written
		b.ResetTimer()
		warm = 0
		n := 0
		for b.Loop() {
			t := time.Now()
			build()
			warm += time.Since(t)
			n++
		}
		warm /= time.Duration(n)
		if walk > 0 {
			b.ReportMetric(float64(warm)/float64(walk), "x-statwalk")
		}
	})
	b.Logf("stat walk %v, warm no-op rebuild %v (%.2f×; target ≤ 3×)", walk, warm, float64(warm)/float64(walk))
}

// writeBenchContext writes the benchmark context: benchFiles files of
// benchFileSize random bytes in directories of benchPerDir, and a
// Dockerfile copying it all.
func writeBenchContext(dir string) error {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, benchFileSize)
	for i := range benchFiles {
		if i%benchPerDir == 0 {
			if err := os.MkdirAll(filepath.Join(dir, fmt.Sprintf("d%03d", i/benchPerDir)), 0o755); err != nil {
				return err
			}
		}
		for j := 0; j < len(buf); j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8; k++ {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		p := filepath.Join(dir, fmt.Sprintf("d%03d", i/benchPerDir), fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY . /app\n"), 0o644)
}
