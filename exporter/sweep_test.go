package exporter

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/builder-dev/builder/cache"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func shaOf(s string) v1.Hash {
	sum := sha256.Sum256([]byte(s))
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// TestSweep: prune's sweep removes the compressed copies and repository
// hints that name blobs nothing needs, and keeps the others.
func TestSweep(t *testing.T) {
	ctx := t.Context()
	s := newTestStore(t)
	data := layerTar(t, map[string]string{"f": "x"})
	layer := shaOf(string(data))
	if _, err := s.layers.Unpack(ctx, layer.String(), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	stored := []byte("stored blob")
	if err := s.putBytes(ctx, stored, shaOf(string(stored))); err != nil {
		t.Fatal(err)
	}
	compressed := func(diffID, digest v1.Hash) string {
		rec := compressedRecord{DiffID: diffID, Digest: digest, Size: 1, MediaType: Compression{}.mediaType()}
		b, _ := json.Marshal(rec)
		name := Compression{}.recordName(diffID.Hex)
		if err := s.blobs.WriteAreaFile(ctx, cache.Compressed, name, b); err != nil {
			t.Fatal(err)
		}
		return name
	}
	sources := func(d v1.Hash) string {
		if err := s.blobs.WriteAreaFile(ctx, cache.Sources, d.Hex+".json", []byte(`{"repos":["r.example/a"]}`)); err != nil {
			t.Fatal(err)
		}
		return d.Hex + ".json"
	}
	var (
		keepStored  = compressed(shaOf("l1"), shaOf(string(stored))) // its blob is here
		keepPushed  = compressed(layer, shaOf("pushed"))             // a registry has it, the layer is here
		dropGone    = compressed(shaOf("l3"), shaOf("gone"))         // blob gone, no registry knows it
		dropNoLayer = compressed(shaOf("l4"), shaOf("orphan"))       // a registry has it, but its layer is gone
		srcPushed   = sources(shaOf("pushed"))                       // named by keepPushed
		srcOrphan   = sources(shaOf("orphan"))                       // named by dropNoLayer only
		srcNeeded   = sources(shaOf("needed"))                       // a kept record names the blob
		srcUnused   = sources(shaOf("unused"))                       // nothing
		damaged     = "00" + shaOf("d").Hex[2:] + ".json"            // left for fsck
	)
	if err := s.blobs.WriteAreaFile(ctx, cache.Compressed, damaged, []byte("{")); err != nil {
		t.Fatal(err)
	}
	needed := func(d string) bool { return d == shaOf("needed").String() || s.blobs.HasBlob(d) }
	freed, err := s.Sweep(ctx, needed)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		filepath.Join(s.compressedDir, keepStored): true, filepath.Join(s.compressedDir, keepPushed): true,
		filepath.Join(s.compressedDir, dropGone): false, filepath.Join(s.compressedDir, dropNoLayer): false,
		filepath.Join(s.compressedDir, damaged): true,
		filepath.Join(s.sourcesDir, srcPushed):  true, filepath.Join(s.sourcesDir, srcOrphan): false,
		filepath.Join(s.sourcesDir, srcNeeded): true, filepath.Join(s.sourcesDir, srcUnused): false,
	}
	for p, keep := range want {
		_, err := os.Stat(p)
		if got := err == nil; got != keep {
			t.Errorf("%s: kept %v, want %v", filepath.Base(filepath.Dir(p))+"/"+filepath.Base(p)[:8], got, keep)
		}
	}
	if freed <= 0 {
		t.Errorf("freed %d bytes, want > 0", freed)
	}
}
