package exporter

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestCompressionIndependentOfCPUs: the compressed bytes of a layer (OCI
// archives, pushes, --cache-to) depend on the data and the codec settings
// only, never on how many blocks are compressed in parallel (GOMAXPROCS),
// so two machines give the same compressed digests: gzip (fixed pgzip
// block size) and zstd (job mode, whose jobs have a size fixed by the
// level), at default and explicit levels. Several blocks of compressible,
// non-repeating data, so blocks and their dictionaries matter. The OCI
// archive's blob and the store's compressed blob are the same bytes. Not
// parallel: GOMAXPROCS is the process's.
func TestCompressionIndependentOfCPUs(t *testing.T) {
	compressionIndependentOfCPUs(t, reproData(5*compressBlockSize+12345), true)
}

// TestIncompressibleIndependentOfCPUs is TestCompressionIndependentOfCPUs
// for a layer of random bytes, which zstd compresses in its stream mode
// (incompressible).
func TestIncompressibleIndependentOfCPUs(t *testing.T) {
	data := randomData(zstdSample + 3*compressBlockSize + 12345)
	if !incompressible(data[:zstdSample]) {
		t.Fatal("random bytes are not taken as incompressible")
	}
	compressionIndependentOfCPUs(t, data, false)
}

// TestIncompressible: random bytes behind a tar header are incompressible;
// text, a short sample and repeated bytes are not.
func TestIncompressible(t *testing.T) {
	tarLike := append(make([]byte, 512), randomData(1<<20)...)
	for _, c := range []struct {
		name string
		data []byte
		want bool
	}{
		{"random after a tar header", tarLike, true},
		{"text", reproData(1 << 20), false},
		{"short", randomData(1 << 10), false},
		{"zeros", make([]byte, 1<<20), false},
	} {
		if got := incompressible(c.data); got != c.want {
			t.Errorf("%s: incompressible %v, want %v", c.name, got, c.want)
		}
	}
}

// randomData returns n random bytes (a fixed seed).
func randomData(n int) []byte {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// compressionIndependentOfCPUs compresses data with each setting and
// GOMAXPROCS 1, 2, 3 and 8: the same bytes for each setting, which
// decompress to data; with distinct, different bytes for each setting
// (random bytes are stored as they are at every level).
func compressionIndependentOfCPUs(t *testing.T, data []byte, distinct bool) {
	sum := sha256.Sum256(data)
	diffID := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	saved := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(saved) })
	settings := []Compression{{}, {Level: 1, LevelSet: true}, {Codec: Zstd}, {Codec: Zstd, Level: 19, LevelSet: true}, {Codec: Zstd, Level: 1, LevelSet: true}}
	seen := map[string]string{}
	for _, c := range settings {
		var ref []byte
		for _, procs := range []int{1, 2, 3, 8} {
			runtime.GOMAXPROCS(procs)
			var out bytes.Buffer
			if err := compressVerified(t.Context(), &out, nil, bytes.NewReader(data), diffID, c); err != nil {
				t.Fatalf("%s: %v", c, err)
			}
			if ref == nil {
				ref = out.Bytes()
				if prev, ok := seen[string(ref)]; ok && distinct {
					t.Errorf("%s gives the bytes of %s", c, prev)
				}
				seen[string(ref)] = c.String()
				rc, err := decompress(bytes.NewReader(ref), c.mediaType())
				if err != nil {
					t.Fatalf("%s: %v", c, err)
				}
				back, err := io.ReadAll(rc)
				if err != nil || !bytes.Equal(back, data) {
					t.Fatalf("%s: decompressed %d bytes (%v), want the %d bytes compressed", c, len(back), err, len(data))
				}
				continue
			}
			if !bytes.Equal(out.Bytes(), ref) {
				t.Errorf("%s, GOMAXPROCS=%d: %d bytes differ from GOMAXPROCS=1's %d", c, procs, out.Len(), len(ref))
			}
		}
	}
}

// reproData returns n bytes of text that compresses but does not repeat.
func reproData(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	for b.Len() < n {
		fmt.Fprintf(&b, "line %d value %d\n", b.Len(), r.IntN(1000))
	}
	return b.Bytes()[:n]
}
