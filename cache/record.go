package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
	"unicode/utf8"
)

// Record is the result of one build step, stored under its cache key.
//
// Inputs whose JSON exceeds inlineInputsMax (a COPY of a big tree lists
// every file) are stored once as a blob named by InputsDigest, and the
// blob is added to Blobs: Lookup then leaves Inputs zero, so a cache hit
// never decodes them, and ReadInputs loads them when a miss is explained.
type Record struct {
	Key          Key    `json:"key"`
	Inputs       Inputs `json:"inputs,omitzero"`
	InputsDigest string `json:"inputsDigest,omitempty"`
	// ContentKey is the step's other key, when it has one: a step that
	// reads another stage is keyed by that stage's key (Key, known before
	// anything runs) and by the files it reads (ContentKey, known once
	// the stage is built). The same result is stored under both.
	ContentKey Key `json:"contentKey,omitzero"`

	DiffID     string            `json:"diffID,omitempty"` // layer diffID; "" for steps without a layer
	Size       int64             `json:"size,omitempty"`   // uncompressed layer size
	EmptyLayer bool              `json:"emptyLayer,omitempty"`
	CreatedBy  string            `json:"createdBy,omitempty"` // history entry
	Comment    string            `json:"comment,omitempty"`
	Created    time.Time         `json:"created"`
	LastUsed   time.Time         `json:"lastUsed"`
	Meta       map[string]string `json:"meta,omitempty"`
	// RunMS is how long the step took when it ran: what a hit saves.
	RunMS int64 `json:"runMS,omitempty"`
	// Blobs lists blobs the result needs (a base image's manifest, config
	// and layers; a compressed layer kept for push). Put refuses a record
	// whose blobs are absent, Lookup treats such a record as a miss, and
	// Prune keeps them while the record lives.
	Blobs []string `json:"blobs,omitempty"`
}

func (s *Store) keyPath(k Key) string { return filepath.Join(s.keys, k.Hex()+".json") }

// Lookup returns the record stored under k, or an error wrapping ErrNotFound.
// A record that cannot be decoded, or whose blobs are gone, is removed and
// reported with an error wrapping both ErrNotFound and ErrCorrupt, so a
// caller that treats ErrNotFound as a miss rebuilds the step. Lookup marks
// the record used (its file mtime is LastUsed), which orders Prune.
func (s *Store) Lookup(ctx context.Context, k Key) (*Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := s.keyPath(k)
	rec, err := readRecord(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lookup %s: %w", k, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("lookup %s: %w", k, err)
	}
	if err := s.checkRecord(k, rec); err != nil {
		os.Remove(p)
		return nil, fmt.Errorf("lookup %s: %w: %w: %s", k, ErrNotFound, ErrCorrupt, err)
	}
	now := time.Now()
	if err := os.Chtimes(p, now, now); err == nil {
		rec.LastUsed = now
	}
	return rec, nil
}

func (s *Store) checkRecord(k Key, rec *Record) error {
	if rec.Key != k {
		return fmt.Errorf("record holds key %s", rec.Key)
	}
	if rec.DiffID != "" {
		if _, err := parseDigest(rec.DiffID); err != nil {
			return fmt.Errorf("layer: %w", err)
		}
	}
	for _, b := range rec.Blobs {
		if !s.HasBlob(b) {
			return fmt.Errorf("blob %s missing", b)
		}
	}
	return nil
}

// readRecord decodes a record file. The file's mtime is LastUsed: Put sets
// it and Lookup refreshes it without rewriting the record. A decode error wraps ErrNotFound and
// ErrCorrupt, and the file is removed.
func readRecord(p string) (*Record, error) {
	rec, err := decodeRecord(p)
	if err != nil && !errors.Is(err, errDamaged) {
		return nil, err
	}
	if err != nil {
		os.Remove(p)
		return nil, fmt.Errorf("%w: %w: decode %s: %v", ErrNotFound, ErrCorrupt, p, err)
	}
	if fi, err := os.Stat(p); err == nil {
		rec.LastUsed = fi.ModTime()
	}
	return rec, nil
}

// Put stores rec under rec.Key, replacing any earlier record. Created and
// LastUsed default to now; LastUsed is kept as the file's mtime. The blobs in rec.Blobs must already be stored.
// Large Inputs are written as a blob first and Put sets rec.InputsDigest,
// which a build record can reference instead of repeating them.
// The write is atomic, so concurrent Puts of the same key all succeed.
func (s *Store) Put(ctx context.Context, rec *Record) error {
	if rec == nil || rec.Key.IsZero() {
		return errors.New("put record: zero key")
	}
	if rec.InputsDigest == "" {
		d, err := s.putInputs(ctx, &rec.Inputs)
		if err != nil {
			return fmt.Errorf("put record %s: %w", rec.Key, err)
		}
		rec.InputsDigest = d
	}
	r := *rec
	if r.InputsDigest != "" {
		r.Inputs = Inputs{}
		if !slices.Contains(r.Blobs, r.InputsDigest) {
			r.Blobs = append(slices.Clip(r.Blobs), r.InputsDigest)
		}
	}
	for _, b := range r.Blobs {
		if _, err := parseDigest(b); err != nil {
			return fmt.Errorf("put record %s: %w", rec.Key, err)
		}
		if !s.HasBlob(b) {
			return fmt.Errorf("put record %s: blob %s: %w", rec.Key, b, ErrNotFound)
		}
	}
	now := time.Now().UTC()
	if r.Created.IsZero() {
		r.Created = now
	}
	if r.LastUsed.IsZero() {
		r.LastUsed = now
	}
	data, err := json.Marshal(&r)
	if err != nil {
		return fmt.Errorf("put record %s: %w", rec.Key, err)
	}
	if err := s.writeFileAtomic(ctx, s.keys, rec.Key.Hex()+".json", seal(data)); err != nil {
		return fmt.Errorf("put record %s: %w", rec.Key, err)
	}
	if err := os.Chtimes(s.keyPath(rec.Key), r.LastUsed, r.LastUsed); err != nil {
		return fmt.Errorf("put record %s: %w", rec.Key, err)
	}
	return nil
}

// RemoveRecord deletes the record under k. Removing an absent record is not
// an error.
func (s *Store) RemoveRecord(ctx context.Context, k Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Remove(s.keyPath(k)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove record %s: %w", k, err)
	}
	return nil
}

// RemoveRecordsOf deletes every record whose layer is diffID (a layer found
// damaged and removed), so the steps that made it miss and run again. It
// returns how many it removed.
func (s *Store) RemoveRecordsOf(ctx context.Context, diffID string) (int, error) {
	recs, err := s.loadRecords(ctx)
	if err != nil {
		return 0, fmt.Errorf("remove records of layer %s: %w", diffID, err)
	}
	n := 0
	for _, r := range recs {
		if r.rec.DiffID != diffID {
			continue
		}
		if err := os.Remove(r.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return n, fmt.Errorf("remove records of layer %s: %w", diffID, err)
		}
		n++
	}
	return n, nil
}

// inlineInputsMax is the size of the largest Inputs JSON kept inside a key
// or build record; larger ones are stored as a blob (see Record).
const inlineInputsMax = 64 << 10

// putInputs stores in as a blob and returns its digest when its JSON is
// larger than inlineInputsMax, else "". Identical inputs are stored once.
func (s *Store) putInputs(ctx context.Context, in *Inputs) (string, error) {
	data, err := json.Marshal(in)
	if err != nil || len(data) <= inlineInputsMax {
		return "", err
	}
	sum := sha256.Sum256(data)
	d, _, err := s.WriteBlob(ctx, bytes.NewReader(data), "sha256:"+hex.EncodeToString(sum[:]))
	return d, err
}

// ReadInputs returns the inputs stored as the blob digest (a Record's or a
// StepRecord's InputsDigest), verified against the digest.
func (s *Store) ReadInputs(ctx context.Context, digest string) (*Inputs, error) {
	data, err := s.ReadBlob(ctx, digest)
	if err != nil {
		return nil, fmt.Errorf("read inputs: %w", err)
	}
	in := new(Inputs)
	if err := json.Unmarshal(data, in); err != nil {
		return nil, fmt.Errorf("read inputs %s: %w: %v", digest, ErrCorrupt, err)
	}
	return in, nil
}

// Record and build files are sealed: the JSON object gets a last member
// "sum", the hex sha256 of the object without it, so a flipped byte or a
// torn write that still decodes is caught (see unseal).
const sealPrefix = `,"sum":"`

// sealLen is the length of the sealed tail: sealPrefix, the hex sum, `"}`.
const sealLen = len(sealPrefix) + 2*sha256.Size + 2

// seal appends the "sum" member to the JSON object data.
func seal(data []byte) []byte {
	if len(data) < 2 || data[len(data)-1] != '}' || bytes.Equal(data, []byte("{}")) {
		return data
	}
	sum := sha256.Sum256(data)
	out := make([]byte, 0, len(data)+sealLen)
	out = append(out, data[:len(data)-1]...)
	out = append(out, sealPrefix...)
	out = hex.AppendEncode(out, sum[:])
	return append(out, `"}`...)
}

// unseal returns the JSON object a sealed file holds, checking its sum. A
// file without a sum (written by an older builder) is returned as it is if
// it is valid UTF-8, which still catches a byte flipped to a non-ASCII
// value.
func unseal(data []byte) ([]byte, error) {
	n := len(data) - sealLen
	if n < 1 || !bytes.HasPrefix(data[n:], []byte(sealPrefix)) || !bytes.HasSuffix(data, []byte(`"}`)) {
		if !utf8.Valid(data) {
			return nil, errors.New("not valid UTF-8")
		}
		return data, nil
	}
	body := append(bytes.Clone(data[:n]), '}')
	sum := sha256.Sum256(body)
	if want := data[n+len(sealPrefix) : len(data)-2]; hex.EncodeToString(sum[:]) != string(want) {
		return nil, fmt.Errorf("checksum mismatch (sum %s, content sha256 %x)", want, sum)
	}
	return body, nil
}
