package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestWriteReadBlob(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	data := []byte("hello blob")
	before := time.Now().Add(-time.Second) // the file system's clock is coarser
	d, n, err := s.WriteBlob(ctx, bytes.NewReader(data), "")
	if err != nil {
		t.Fatal(err)
	}
	stored, err := s.BlobTime(d)
	if err != nil || stored.Before(before) || stored.After(time.Now()) {
		t.Errorf("BlobTime = %s, %v; want the time it was written (after %s)", stored, err, before)
	}
	// Writing it again does not make it newer: the time is when the store got it.
	if _, _, err := s.WriteBlob(ctx, bytes.NewReader(data), d); err != nil {
		t.Fatal(err)
	}
	if again, err := s.BlobTime(d); err != nil || !again.Equal(stored) {
		t.Errorf("BlobTime after a second write = %s, %v; want %s", again, err, stored)
	}
	if d != digestOf(data) || n != int64(len(data)) {
		t.Fatalf("WriteBlob = %s, %d; want %s, %d", d, n, digestOf(data), len(data))
	}
	got, err := s.ReadBlob(ctx, d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadBlob = %q, %v", got, err)
	}
	if !s.HasBlob(d) {
		t.Error("HasBlob = false")
	}
	if sz, err := s.BlobSize(d); err != nil || sz != int64(len(data)) {
		t.Errorf("BlobSize = %d, %v", sz, err)
	}
	fi, err := os.Stat(filepath.Join(s.Root(), "blobs", "sha256", d[7:]))
	if err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("blob file mode %v, %v: want private", fi.Mode(), err)
	}
	if err := s.RemoveBlob(ctx, d); err != nil {
		t.Fatal(err)
	}
	if s.HasBlob(d) {
		t.Error("HasBlob after RemoveBlob = true")
	}
	if _, err := s.ReadBlob(ctx, d); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadBlob after remove: %v, want ErrNotFound", err)
	}
	if _, err := s.BlobTime(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("BlobTime after remove: %v, want ErrNotFound", err)
	}
	if err := s.RemoveBlob(ctx, d); err != nil {
		t.Errorf("RemoveBlob of absent blob: %v", err)
	}
	assertNoTemp(t, s)
}

func TestWriteBlobWant(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	data := []byte("expected content")
	want := digestOf(data)
	if _, _, err := s.WriteBlob(ctx, strings.NewReader("other content"), want); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("mismatched content: %v, want ErrCorrupt", err)
	}
	if s.HasBlob(want) {
		t.Fatal("mismatched content was stored")
	}
	assertNoTemp(t, s)
	if d, _, err := s.WriteBlob(ctx, bytes.NewReader(data), want); err != nil || d != want {
		t.Fatalf("WriteBlob = %s, %v", d, err)
	}
	// An existing blob is not read again.
	d, n, err := s.WriteBlob(ctx, failReader{}, want)
	if err != nil || d != want || n != int64(len(data)) {
		t.Fatalf("WriteBlob of existing = %s, %d, %v", d, n, err)
	}
}

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, errors.New("reader must not be read") }

func TestWriteBlobReaderError(t *testing.T) {
	s := openStore(t)
	r := io.MultiReader(strings.NewReader("partial"), failReader{})
	if _, _, err := s.WriteBlob(t.Context(), r, ""); err == nil {
		t.Fatal("WriteBlob with failing reader succeeded")
	}
	assertNoTemp(t, s)
	entries, _ := os.ReadDir(filepath.Join(s.Root(), "blobs", "sha256"))
	if len(entries) != 0 {
		t.Errorf("partial blob left: %v", entries)
	}
}

func TestBlobInvalidDigest(t *testing.T) {
	s := openStore(t)
	for _, d := range []string{"", "sha256:../../etc/passwd", "md5:abcd", "sha256:" + strings.Repeat("A", 64)} {
		if _, err := s.OpenBlob(t.Context(), d); err == nil {
			t.Errorf("OpenBlob(%q) succeeded", d)
		}
		if _, _, err := s.WriteBlob(t.Context(), strings.NewReader("x"), d); d != "" && err == nil {
			t.Errorf("WriteBlob(want=%q) succeeded", d)
		}
		if s.HasBlob(d) {
			t.Errorf("HasBlob(%q) = true", d)
		}
	}
}

// blobDamages change a blob file the way a disk or a person might.
var blobDamages = map[string]func(p string) error{
	"flipped": func(p string) error {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b[len(b)/2] ^= 0xff
		return os.WriteFile(p, b, 0o600)
	},
	"truncated": func(p string) error { return os.Truncate(p, 10) },
	"empty":     func(p string) error { return os.Truncate(p, 0) },
}

func TestCorruptBlobDetectedAndDropped(t *testing.T) {
	for name, damage := range blobDamages {
		t.Run(name, func(t *testing.T) {
			s := openStore(t)
			d := mustWriteBlob(t, s, bytes.Repeat([]byte("layer data "), 1000))
			if err := damage(filepath.Join(s.Root(), "blobs", "sha256", d[7:])); err != nil {
				t.Fatal(err)
			}
			_, err := s.ReadBlob(t.Context(), d)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), d) {
				t.Fatalf("ReadBlob of damaged blob: %v; want ErrCorrupt naming %s", err, d)
			}
			if s.HasBlob(d) {
				t.Error("corrupt blob was not removed")
			}
		})
	}
}

// fileRanges is a RangeWriter into a buffer.
type fileRanges struct{ bytes.Buffer }

func (w *fileRanges) WriteFileRange(f *os.File, off, n int64) (int64, error) {
	return io.Copy(&w.Buffer, io.NewSectionReader(f, off, n))
}

// TestCopyBlob: CopyBlob gives a blob's bytes by range and checks them as
// OpenBlob's reader does: a damaged blob is an error wrapping ErrCorrupt
// that names it, and is removed; a missing one is ErrNotFound.
func TestCopyBlob(t *testing.T) {
	data := bytes.Repeat([]byte("copied blob "), 5000)
	s := openStore(t)
	d := mustWriteBlob(t, s, data)
	var w fileRanges
	if n, err := s.CopyBlob(t.Context(), d, &w); err != nil || n != int64(len(data)) || !bytes.Equal(w.Bytes(), data) {
		t.Fatalf("CopyBlob: %d bytes, %v; content equal: %v", n, err, bytes.Equal(w.Bytes(), data))
	}
	for name, damage := range blobDamages {
		t.Run(name, func(t *testing.T) {
			s := openStore(t)
			d := mustWriteBlob(t, s, data)
			if err := damage(filepath.Join(s.Root(), "blobs", "sha256", d[7:])); err != nil {
				t.Fatal(err)
			}
			_, err := s.CopyBlob(t.Context(), d, &fileRanges{})
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), d) {
				t.Fatalf("CopyBlob of a damaged blob: %v; want ErrCorrupt naming %s", err, d)
			}
			if s.HasBlob(d) {
				t.Error("corrupt blob was not removed")
			}
			if _, err := s.CopyBlob(t.Context(), d, &fileRanges{}); !errors.Is(err, ErrNotFound) {
				t.Errorf("CopyBlob of a removed blob: %v; want ErrNotFound", err)
			}
		})
	}
}

// TestConcurrentIdenticalBlobWrites is CACHE-03 within one process.
func TestConcurrentIdenticalBlobWrites(t *testing.T) {
	s := openStore(t)
	want := digestOf(helperPayload)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := ""
			if i%2 == 0 {
				w = want
			}
			d, _, err := s.WriteBlob(t.Context(), bytes.NewReader(helperPayload), w)
			if err == nil && d != want {
				err = errors.New("digest " + d)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	assertOneBlob(t, s, want)
	assertNoTemp(t, s)
}

// TestConcurrentProcessesWriteSameBlobAndRecord is CACHE-03 across
// processes: two helpers write the same blob and record 20 times each.
func TestConcurrentProcessesWriteSameBlobAndRecord(t *testing.T) {
	root := t.TempDir()
	a := startHelper(t, "write", root, nil)
	b := startHelper(t, "write", root, nil)
	if err := a.Wait(); err != nil {
		t.Fatalf("helper a: %v", err)
	}
	if err := b.Wait(); err != nil {
		t.Fatalf("helper b: %v", err)
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := digestOf(helperPayload)
	assertOneBlob(t, s, want)
	if _, err := s.ReadBlob(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Lookup(t.Context(), helperRecord(s, want).Key)
	if err != nil || rec.DiffID != want {
		t.Fatalf("Lookup = %+v, %v", rec, err)
	}
	assertNoTemp(t, s)
}

func assertOneBlob(t *testing.T, s *Store, want string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Root(), "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || "sha256:"+entries[0].Name() != want {
		t.Errorf("blobs = %v, want exactly %s", entries, want)
	}
}

func assertNoTemp(t *testing.T, s *Store) {
	t.Helper()
	var left []string
	err := filepath.WalkDir(filepath.Join(s.Root(), "tmp"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
}
