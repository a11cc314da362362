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

	"github.com/builder-dev/builder/cache"
	"github.com/docker/go-units"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// compressedRecord is one diffID → compressed blob mapping, for one codec
// and level (Codec "" and no Level: gzip at its default level, the
// records of earlier builders).
type compressedRecord struct {
	DiffID    v1.Hash         `json:"diffID"`
	Digest    v1.Hash         `json:"digest"`
	Size      int64           `json:"size"`
	MediaType types.MediaType `json:"mediaType"`
	Codec     Codec           `json:"codec,omitempty"`
	Level     *int            `json:"level,omitempty"`
}

// compression is the setting the record was made with.
func (r compressedRecord) compression() Compression {
	c := Compression{Codec: r.Codec}
	if r.Level != nil {
		c.Level, c.LevelSet = *r.Level, true
	}
	return c
}

func newCompressedRecord(diffID, digest v1.Hash, size int64, c Compression) compressedRecord {
	rec := compressedRecord{DiffID: diffID, Digest: digest, Size: size, MediaType: c.mediaType()}
	if c.codec() != Gzip {
		rec.Codec = c.codec()
	}
	if c.LevelSet {
		level := c.Level
		rec.Level = &level
	}
	return rec
}

// Compressed returns l as it leaves the machine with compression c: an
// uncompressed layer compressed with c, whose bytes are a blob of the
// store; a layer compressed already as it is, unless c forces another
// codec or level (see Compression.keeps). The first call for a layer and
// setting compresses it on every core, checks its diffID on the way,
// stores the result as a blob and records diffID, codec and level → blob
// digest, so later calls (a second push) only read that record. notify,
// if not nil, hears one line when a layer is compressed.
func (s *Store) Compressed(ctx context.Context, l v1.Layer, c Compression, notify func(string)) (v1.Layer, error) {
	mt, err := l.MediaType()
	if err != nil {
		return nil, fmt.Errorf("compress layer: %w", err)
	}
	if c.keeps(mt) {
		return l, nil
	}
	diffID, err := l.DiffID()
	if err != nil {
		return nil, fmt.Errorf("compress layer: %w", err)
	}
	if c.codec() == Uncompressed {
		return uncompressedLayer(l)
	}
	if cl, ok, err := s.recordedLayer(ctx, diffID, c); ok || err != nil {
		return cl, err
	}
	if notify != nil {
		notify(fmt.Sprintf("compressing layer %s (%s)", shortDigest(diffID), c))
	}
	rec, err := s.compress(ctx, l, diffID, c)
	if err != nil {
		return nil, fmt.Errorf("compress layer %s: %w", diffID, err)
	}
	if notify != nil {
		notify(fmt.Sprintf("compressed layer %s to %s (%s)", shortDigest(diffID), shortDigest(rec.Digest), units.HumanSize(float64(rec.Size))))
	}
	return s.recordLayer(ctx, rec)
}

// recordedLayer returns the layer diffID compressed with c, if the store
// recorded that blob (a push, a cache export, a pull) and holds it, or,
// for a layer hit in a remote cache and not fetched, its blob there.
func (s *Store) recordedLayer(ctx context.Context, diffID v1.Hash, c Compression) (v1.Layer, bool, error) {
	if rec, ok := s.compressedRecord(diffID, c); ok {
		l, err := s.recordLayer(ctx, rec)
		return l, err == nil, err
	}
	if !s.layers.Has(diffID.String()) {
		if rr, repos, ok := s.remoteRecord(diffID, &c); ok {
			return &remoteBlobLayer{s: s, ctx: ctx, rec: rr, repos: repos}, true, nil
		}
	}
	return nil, false, nil
}

// recordLayer is the compressed layer rec records, read from its blob.
func (s *Store) recordLayer(ctx context.Context, rec compressedRecord) (v1.Layer, error) {
	desc := v1.Descriptor{MediaType: rec.MediaType, Digest: rec.Digest, Size: rec.Size}
	return LayerFromBlob(ctx, s.blobs, desc, rec.DiffID)
}

// compressedRecord returns the recorded blob of diffID compressed with c
// if both the record and the blob are there. A missing, unreadable or
// stale record is a miss: the layer is compressed again and the record
// rewritten.
func (s *Store) compressedRecord(diffID v1.Hash, c Compression) (compressedRecord, bool) {
	rec, err := s.readCompressedRecord(diffID, c)
	if err != nil || !s.blobs.HasBlob(rec.Digest.String()) {
		return compressedRecord{}, false
	}
	return rec, true
}

// readCompressedRecord reads the record of diffID compressed with c,
// whether or not its blob is here.
func (s *Store) readCompressedRecord(diffID v1.Hash, c Compression) (compressedRecord, error) {
	var rec compressedRecord
	data, err := os.ReadFile(s.compressedPath(diffID, c))
	if err != nil {
		return compressedRecord{}, err
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return compressedRecord{}, err
	}
	if rec.DiffID != diffID || rec.MediaType != c.mediaType() || rec.compression() != c.recorded() {
		return compressedRecord{}, errors.New("record names another layer or setting")
	}
	return rec, nil
}

// anyCompressedRecord returns a recorded compressed blob of diffID: gzip
// at the default level first, then any other record of the layer.
func (s *Store) anyCompressedRecord(diffID v1.Hash) (compressedRecord, bool) {
	if rec, ok := s.compressedRecord(diffID, Compression{}); ok {
		return rec, true
	}
	for _, rec := range s.compressedRecords() {
		if rec.DiffID != diffID {
			continue
		}
		if rec, ok := s.compressedRecord(diffID, rec.compression()); ok {
			return rec, true
		}
	}
	return compressedRecord{}, false
}

func (s *Store) compressedPath(diffID v1.Hash, c Compression) string {
	return filepath.Join(s.compressedDir, c.recordName(diffID.Hex))
}

// compress streams l's tar through c's compressor into a new blob,
// failing if the tar's sha256 is not diffID, then records the mapping.
func (s *Store) compress(ctx context.Context, l v1.Layer, diffID v1.Hash, c Compression) (compressedRecord, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return compressedRecord{}, err
	}
	defer rc.Close()
	// A record is trusted from now on: its content is hashed here even
	// when the layer's stream checks itself (no layer given).
	var digest string
	var size int64
	err = compressAside(ctx, nil, rc, diffID, c, func(r io.Reader) (err error) {
		digest, size, err = s.blobs.WriteBlob(ctx, r, "")
		return err
	})
	if err != nil {
		return compressedRecord{}, err
	}
	h, err := v1.NewHash(digest)
	if err != nil {
		return compressedRecord{}, err
	}
	rec := newCompressedRecord(diffID, h, size, c)
	if err := s.writeCompressedRecord(ctx, rec); err != nil {
		return compressedRecord{}, err
	}
	return rec, nil
}

// compressAside runs compressVerified on another goroutine and hands its
// output to consume on this one, so that the compressor and what takes
// its output (a file's writes and the blob's hash) run side by side. An
// error of the compressor reaches consume as its reader's error.
func compressAside(ctx context.Context, l v1.Layer, r io.Reader, diffID v1.Hash, c Compression, consume func(io.Reader) error) error {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(compressVerified(ctx, pw, l, r, diffID, c))
	}()
	err := consume(pr)
	pr.CloseWithError(errors.New("compress: output consumer stopped"))
	<-done
	return err
}

// compressVerified writes r, the uncompressed stream of l, compressed with
// c to w and checks that r's content has the digest diffID; a layer that
// checks its own stream (selfChecked) is not hashed a second time.
func compressVerified(ctx context.Context, w io.Writer, l v1.Layer, r io.Reader, diffID v1.Hash, c Compression) error {
	if sc, ok := l.(selfChecked); ok && sc.checksDiffID() {
		return c.compress(ctx, w, r)
	}
	h := sha256.New()
	if err := c.compress(ctx, w, io.TeeReader(r, h)); err != nil {
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
	if err := s.blobs.WriteAreaFile(ctx, cache.Compressed, rec.compression().recordName(rec.DiffID.Hex), data); err != nil {
		return fmt.Errorf("record compressed layer: %w", err)
	}
	return nil
}
