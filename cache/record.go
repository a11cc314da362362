package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Record is the result of one build step, stored under its cache key.
type Record struct {
	Key        Key               `json:"key"`
	Inputs     Inputs            `json:"inputs"`
	DiffID     string            `json:"diffID,omitempty"` // layer diffID; "" for steps without a layer
	Size       int64             `json:"size,omitempty"`   // uncompressed layer size
	EmptyLayer bool              `json:"emptyLayer,omitempty"`
	CreatedBy  string            `json:"createdBy,omitempty"` // history entry
	Comment    string            `json:"comment,omitempty"`
	Created    time.Time         `json:"created"`
	LastUsed   time.Time         `json:"lastUsed"`
	Meta       map[string]string `json:"meta,omitempty"`
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
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	rec := new(Record)
	if err := json.Unmarshal(data, rec); err != nil {
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
// The write is atomic, so concurrent Puts of the same key all succeed.
func (s *Store) Put(ctx context.Context, rec *Record) error {
	if rec == nil || rec.Key.IsZero() {
		return errors.New("put record: zero key")
	}
	for _, b := range rec.Blobs {
		if _, err := parseDigest(b); err != nil {
			return fmt.Errorf("put record %s: %w", rec.Key, err)
		}
		if !s.HasBlob(b) {
			return fmt.Errorf("put record %s: blob %s: %w", rec.Key, b, ErrNotFound)
		}
	}
	r := *rec
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
	if err := s.writeFileAtomic(ctx, s.keys, rec.Key.Hex()+".json", data); err != nil {
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
