package cache

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPutLookup(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	d := mustWriteBlob(t, s, []byte("layer"))
	rec := &Record{
		Key:        KeyOf(Key{}, Inputs{Op: "COPY", Files: []FileInput{{Path: "a", Type: "file", Mode: 0o644, Digest: d}}}),
		Inputs:     Inputs{Op: "COPY", Files: []FileInput{{Path: "a", Type: "file", Mode: 0o644, Digest: d}}},
		DiffID:     d,
		Size:       5,
		CreatedBy:  "COPY a /a",
		Comment:    "buildkit.dockerfile.v0",
		Created:    time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		LastUsed:   time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		Meta:       map[string]string{"blob": d},
		Blobs:      []string{d},
		EmptyLayer: false,
	}
	if _, err := s.Lookup(ctx, rec.Key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup before Put: %v, want ErrNotFound", err)
	}
	if err := s.Put(ctx, rec); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	got, err := s.Lookup(ctx, rec.Key)
	if err != nil {
		t.Fatal(err)
	}
	if got.LastUsed.Before(before) {
		t.Errorf("LastUsed %v not refreshed (before %v)", got.LastUsed, before)
	}
	want := *rec
	want.LastUsed = got.LastUsed
	if diff := cmp.Diff(&want, got); diff != "" {
		t.Errorf("Lookup mismatch (-want +got):\n%s", diff)
	}
	assertNoTemp(t, s)
}

func TestPutDefaultsAndValidation(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	if err := s.Put(ctx, &Record{}); err == nil {
		t.Error("Put with zero key succeeded")
	}
	k := KeyOf(Key{}, Inputs{Op: "RUN"})
	missing := digestOf([]byte("never written"))
	if err := s.Put(ctx, &Record{Key: k, Blobs: []string{missing}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Put naming a missing blob: %v, want ErrNotFound", err)
	}
	if err := s.Put(ctx, &Record{Key: k, Blobs: []string{"sha256:../x"}}); err == nil {
		t.Error("Put naming an invalid digest succeeded")
	}
	if err := s.Put(ctx, &Record{Key: k, EmptyLayer: true}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Lookup(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if got.Created.IsZero() || !got.EmptyLayer {
		t.Errorf("got %+v, want Created set and EmptyLayer", got)
	}
}

func TestLookupCorruptRecordIsMiss(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	k := KeyOf(Key{}, Inputs{Op: "RUN"})
	if err := os.WriteFile(s.keyPath(k), []byte(`{"key": "sha256:tru`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := s.Lookup(ctx, k)
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Lookup of torn record: %v, want ErrNotFound and ErrCorrupt", err)
	}
	if _, err := os.Stat(s.keyPath(k)); !errors.Is(err, os.ErrNotExist) {
		t.Error("corrupt record not removed")
	}
}

func TestLookupRecordWithMissingBlobIsMiss(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	d := mustWriteBlob(t, s, []byte("config"))
	k := KeyOf(Key{}, Inputs{Op: "FROM"})
	if err := s.Put(ctx, &Record{Key: k, Blobs: []string{d}}); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveBlob(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup with missing blob: %v, want ErrNotFound", err)
	}
}

func TestLookupWrongKeyInFile(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	k1, k2 := KeyOf(Key{}, Inputs{Op: "RUN"}), KeyOf(Key{}, Inputs{Op: "COPY"})
	if err := s.Put(ctx, &Record{Key: k1}); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(s.keyPath(k1), s.keyPath(k2)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, k2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Lookup of misplaced record: %v, want ErrCorrupt", err)
	}
}

func TestConcurrentPutSameKey(t *testing.T) {
	s := openStore(t)
	d := mustWriteBlob(t, s, helperPayload)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if err := s.Put(t.Context(), helperRecord(s, d)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if _, err := s.Lookup(t.Context(), helperRecord(s, d).Key); err != nil {
		t.Fatal(err)
	}
	assertNoTemp(t, s)
	if err := s.RemoveRecord(t.Context(), helperRecord(s, d).Key); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(t.Context(), helperRecord(s, d).Key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup after RemoveRecord: %v", err)
	}
}
