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
// archive's spool and the store's compressed blob are the same bytes. Not
// parallel: GOMAXPROCS is the process's.
func TestCompressionIndependentOfCPUs(t *testing.T) {
	data := reproData(5*compressBlockSize + 12345)
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
				if prev, ok := seen[string(ref)]; ok {
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
