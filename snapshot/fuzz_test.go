package snapshot_test

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/fuzztest"
	"github.com/builder-dev/builder/snapshot"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// Limits of one FuzzApply input: small, so that the limit paths are
// reachable with small inputs and no input writes much.
const (
	fuzzApplyMaxBytes   = 1 << 20
	fuzzApplyMaxEntries = 256
)

// fuzzBounds are the per-input bounds of the snapshot fuzz targets: Apply
// allocates a 1 MiB copy buffer per call, decoders a few MiB.
var fuzzBounds = fuzztest.Bounds{Timeout: 5 * time.Second, Grace: 3 * time.Second, MaxAlloc: 256 << 20}

// FuzzApply feeds arbitrary bytes to Apply in all three whiteout modes, one
// after the other onto the same root, and checks that it never panics,
// reads the whole stream when it succeeds, honours its context, stays
// within its byte limit, and never touches anything outside the root.
//
// The world (root, victim tree, "dest-evil" sibling) lives on a tmpfs and
// is made once per worker process; each input starts from an empty root.
// Seeds: testdata/fuzz/FuzzApply (see TestFuzzSeeds).
func FuzzApply(f *testing.F) {
	scratch := fuzztest.ScratchDir(f)
	worlds := 0
	var w axWorld
	modes := [][]snapshot.ApplyOption{nil, {snapshot.WithOverlayWhiteouts()}, {snapshot.WithNoWhiteouts()}}
	f.Fuzz(func(t *testing.T, data []byte) {
		if w.dir == "" {
			worlds++
			dir := filepath.Join(scratch, "world"+strconv.Itoa(worlds))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			w = axNewWorldIn(t, dir)
		}
		trusted := false
		defer func() {
			if !trusted { // a failed input may leave a world we cannot reset
				_ = fuzztest.RemoveAll(w.dir)
				w = axWorld{}
			}
		}()
		if err := axResetRoot(w.root); err != nil {
			t.Fatalf("reset root: %v", err)
		}
		before := w.listing(t)
		fuzztest.Run(t, fuzzBounds, func(ctx context.Context) {
			for _, mode := range modes {
				opts := append([]snapshot.ApplyOption{snapshot.WithLimits(fuzzApplyMaxBytes, fuzzApplyMaxEntries), snapshot.WithWarn(func(string) {})}, mode...)
				if os.Geteuid() != 0 {
					opts = append(opts, snapshot.WithNoSameOwner())
				}
				n, err := snapshot.Apply(ctx, w.root, bytes.NewReader(data), opts...)
				if err == nil && n != int64(len(data)) {
					t.Errorf("Apply read %d of %d bytes without error", n, len(data))
				}
			}
		})
		if diff := cmp.Diff(before, w.listing(t)); diff != "" {
			t.Fatalf("files outside the root changed (-before +after):\n%s", diff)
		}
		if n := axContentBytes(t, w.root); n > int64(len(modes))*fuzzApplyMaxBytes {
			t.Fatalf("root holds %d bytes of file content, more than %d Apply calls with a %d byte limit may write", n, len(modes), fuzzApplyMaxBytes)
		}
		trusted = true
	})
}

// axResetRoot empties the root and undoes what a "." entry did to it.
func axResetRoot(root string) error {
	_ = os.Chmod(root, 0o755)
	if err := fuzztest.RemoveAll(root); err != nil {
		return err
	}
	return os.Mkdir(root, 0o755)
}

// axContentBytes is the size of the distinct regular files below root.
func axContentBytes(t *testing.T, root string) int64 {
	t.Helper()
	var total int64
	seen := map[uint64]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Mode&0o700 != 0o700 {
			_ = unix.Chmod(p, 0o700) // without root, a mode 0 directory hides its content
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG && !seen[st.Ino] {
			seen[st.Ino] = true
			total += st.Size
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk root: %v", err)
	}
	return total
}

// fuzzDecompressBounds allow for the zstd decoder, which allocates the
// window a frame header asks for before it reads a block: a single-segment
// frame of 16 bytes may ask for up to 512 MiB (klauspost/compress's
// MaxWindowSize; larger ones are refused), and Decompress and IsArchive
// each open a decoder.
var fuzzDecompressBounds = fuzztest.Bounds{Timeout: 5 * time.Second, Grace: 3 * time.Second, MaxAlloc: 1280 << 20}

// FuzzDecompress feeds arbitrary bytes to Decompress and IsArchive: no
// panic, bounded time and allocation, and IsArchive replays its input
// exactly. Seeds: testdata/fuzz/FuzzDecompress (see TestFuzzSeeds).
func FuzzDecompress(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzztest.Run(t, fuzzDecompressBounds, func(context.Context) {
			if rc, _, err := snapshot.Decompress(bytes.NewReader(data)); err == nil {
				_, _ = io.Copy(io.Discard, io.LimitReader(rc, 16<<20))
				_ = rc.Close() // reports the same decoding errors as Read
			}
			_, r, err := snapshot.IsArchive(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("IsArchive of an in-memory reader: %v", err)
			}
			replay, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(replay, data) {
				t.Fatalf("IsArchive replayed %d bytes (err %v), want %d", len(replay), err, len(data))
			}
		})
	})
}
