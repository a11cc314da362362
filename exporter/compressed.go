package exporter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/docker/go-units"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/pgzip"
)

// pgzipBlockSize fixes the compressed bytes of a layer: pgzip's output
// depends on the block size, not on how many blocks run at once.
const pgzipBlockSize = 1 << 20

// compressedRecord is one diffID → gzip blob mapping.
type compressedRecord struct {
	DiffID    v1.Hash         `json:"diffID"`
	Digest    v1.Hash         `json:"digest"`
	Size      int64           `json:"size"`
	MediaType types.MediaType `json:"mediaType"`
}

// Compressed returns l as a gzip layer whose bytes are a blob of the store.
// A layer already compressed is returned as it is. For an uncompressed
// layer, the first call compresses it with pgzip in parallel, checks its
// diffID on the way, stores the result as a blob and records diffID →
// blob digest, so later calls (a second push) only read that record.
// notify, if not nil, hears one line when a layer is compressed.
func (s *Store) Compressed(ctx context.Context, l v1.Layer, notify func(string)) (v1.Layer, error) {
	mt, err := l.MediaType()
	if err != nil {
		return nil, fmt.Errorf("compress layer: %w", err)
	}
	if !isUncompressed(mt) {
		return l, nil
	}
	diffID, err := l.DiffID()
	if err != nil {
		return nil, fmt.Errorf("compress layer: %w", err)
	}
	rec, ok := s.compressedRecord(diffID)
	if !ok {
		if notify != nil {
			notify(fmt.Sprintf("compressing layer %s", shortDigest(diffID)))
		}
		if rec, err = s.compress(ctx, l, diffID); err != nil {
			return nil, fmt.Errorf("compress layer %s: %w", diffID, err)
		}
		if notify != nil {
			notify(fmt.Sprintf("compressed layer %s to %s (%s)", shortDigest(diffID), shortDigest(rec.Digest), units.HumanSize(float64(rec.Size))))
		}
	}
	desc := v1.Descriptor{MediaType: rec.MediaType, Digest: rec.Digest, Size: rec.Size}
	return LayerFromBlob(ctx, s.blobs, desc, diffID)
}

// compressedRecord returns the recorded gzip blob of diffID if both the
// record and the blob are there. A missing, unreadable or stale record is
// a miss: the layer is compressed again and the record rewritten.
func (s *Store) compressedRecord(diffID v1.Hash) (compressedRecord, bool) {
	var rec compressedRecord
	data, err := os.ReadFile(s.compressedPath(diffID))
	if err != nil || json.Unmarshal(data, &rec) != nil {
		return compressedRecord{}, false
	}
	if rec.DiffID != diffID || rec.MediaType != types.OCILayer || !s.blobs.HasBlob(rec.Digest.String()) {
		return compressedRecord{}, false
	}
	return rec, true
}

func (s *Store) compressedPath(diffID v1.Hash) string {
	return filepath.Join(s.compressedDir, diffID.Hex+".json")
}

// compress streams l's tar through pgzip into a new blob, failing if the
// tar's sha256 is not diffID, then records the mapping.
func (s *Store) compress(ctx context.Context, l v1.Layer, diffID v1.Hash) (compressedRecord, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return compressedRecord{}, err
	}
	defer rc.Close()
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(gzipVerified(ctx, pw, rc, diffID))
	}()
	digest, size, err := s.blobs.WriteBlob(ctx, pr, "")
	pr.CloseWithError(errors.New("compress: blob writer stopped"))
	<-done
	if err != nil {
		return compressedRecord{}, err
	}
	h, err := v1.NewHash(digest)
	if err != nil {
		return compressedRecord{}, err
	}
	rec := compressedRecord{DiffID: diffID, Digest: h, Size: size, MediaType: types.OCILayer}
	if err := s.writeCompressedRecord(ctx, rec); err != nil {
		return compressedRecord{}, err
	}
	return rec, nil
}

// gzipVerified writes the gzip of r to w and checks that r's content has
// the digest diffID. The gzip header carries no name and no time.
func gzipVerified(ctx context.Context, w io.Writer, r io.Reader, diffID v1.Hash) error {
	zw, err := pgzip.NewWriterLevel(w, pgzip.DefaultCompression)
	if err != nil {
		return err
	}
	zw.Header.ModTime = time.Unix(0, 0) // pgzip writes the zero time as 2042
	if err := zw.SetConcurrency(pgzipBlockSize, runtime.GOMAXPROCS(0)); err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(zw, io.TeeReader(contextReader{ctx, r}, h)); err != nil {
		zw.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != diffID.Hex {
		return fmt.Errorf("layer content has digest sha256:%s, want %s", got, diffID)
	}
	return nil
}

// writeCompressedRecord writes rec durably through the store, so a reader
// sees a whole record or none.
func (s *Store) writeCompressedRecord(ctx context.Context, rec compressedRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := s.blobs.WriteAreaFile(ctx, cache.Compressed, rec.DiffID.Hex+".json", data); err != nil {
		return fmt.Errorf("record compressed layer: %w", err)
	}
	return nil
}
