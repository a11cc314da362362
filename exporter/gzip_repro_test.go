package exporter

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestGzipIndependentOfCPUs: the gzip bytes of a layer (OCI archives,
// pushes, --cache-to) depend on the fixed pgzip block size only, never on
// how many blocks are compressed in parallel (GOMAXPROCS), so two
// machines give the same compressed digests. Several blocks of
// compressible, non-repeating data, so blocks and their dictionaries
// matter. Both gzip writers give the same bytes. Not parallel: GOMAXPROCS is the process's.
func TestGzipIndependentOfCPUs(t *testing.T) {
	data := reproData(5*pgzipBlockSize + 12345)
	sum := sha256.Sum256(data)
	diffID := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	saved := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(saved) })
	var ref []byte
	var refStream v1.Hash
	for _, procs := range []int{1, 2, 3, 8} {
		runtime.GOMAXPROCS(procs)
		var verified, stream bytes.Buffer
		if err := gzipVerified(t.Context(), &verified, bytes.NewReader(data), diffID); err != nil {
			t.Fatal(err)
		}
		h, _, err := gzipStream(t.Context(), &stream, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if ref == nil {
			ref, refStream = verified.Bytes(), h
			if !bytes.Equal(stream.Bytes(), ref) {
				t.Errorf("the OCI archive's gzip of a layer (%d bytes) is not the blob Compressed makes (%d bytes)", stream.Len(), len(ref))
			}
			continue
		}
		if !bytes.Equal(verified.Bytes(), ref) {
			t.Errorf("GOMAXPROCS=%d: Compressed's gzip differs from GOMAXPROCS=1's (%d and %d bytes)", procs, verified.Len(), len(ref))
		}
		if h != refStream {
			t.Errorf("GOMAXPROCS=%d: the OCI archive's gzip is %s, with GOMAXPROCS=1 %s", procs, h, refStream)
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
