package snapshot_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"

	"github.com/builder-dev/builder/snapshot"
	"github.com/google/go-cmp/cmp"
)

// axSeedTars are the lower and upper layers of every reliability case,
// with host paths of a made-up world.
func axSeedTars(f *testing.F) [][]byte {
	w := axWorld{dir: "/tmp/axfuzz", root: "/tmp/axfuzz/dest", victim: "/tmp/axfuzz/victim"}
	var out [][]byte
	for _, tc := range axReliabilityCases() {
		if len(tc.lower) > 0 {
			out = append(out, axTar(f, tc.lower...))
		}
		out = append(out, axTar(f, append(append([]axEnt{}, tc.lower...), tc.layer(w)...)...))
	}
	return out
}

// FuzzApply feeds arbitrary bytes to Apply in all three whiteout modes and
// checks it never panics and never touches anything outside the root.
func FuzzApply(f *testing.F) {
	for _, seed := range axSeedTars(f) {
		f.Add(seed)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 1024))
	modes := [][]snapshot.ApplyOption{nil, {snapshot.WithOverlayWhiteouts()}, {snapshot.WithNoWhiteouts()}}
	f.Fuzz(func(t *testing.T, data []byte) {
		w := axNewWorld(t)
		before := w.listing(t)
		for _, mode := range modes {
			opts := append([]snapshot.ApplyOption{snapshot.WithLimits(4<<20, 2000), snapshot.WithWarn(func(string) {})}, mode...)
			if os.Geteuid() != 0 {
				opts = append(opts, snapshot.WithNoSameOwner())
			}
			n, err := snapshot.Apply(context.Background(), w.root, bytes.NewReader(data), opts...)
			if err == nil && n != int64(len(data)) {
				t.Errorf("Apply read %d of %d bytes without error", n, len(data))
			}
		}
		if diff := cmp.Diff(before, w.listing(t)); diff != "" {
			t.Fatalf("files outside the root changed (-before +after):\n%s", diff)
		}
	})
}

// FuzzDecompress feeds arbitrary bytes to Decompress and IsArchive: no
// panic, bounded output, and IsArchive replays its input exactly.
func FuzzDecompress(f *testing.F) {
	for _, seed := range axSeedTars(f)[:4] {
		f.Add(seed)
		f.Add(axGzip(f, seed))
		f.Add(axZstd(f, seed))
	}
	f.Add([]byte("BZh91AY&SY"))
	f.Add([]byte{0xfd, '7', 'z', 'X', 'Z', 0x00, 0x00, 0x04})
	f.Add([]byte{0x1f, 0x8b, 0x08, 0x00})
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
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
}
