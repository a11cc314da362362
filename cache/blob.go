package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// parseDigest validates "sha256:<64 lower-case hex>" and returns the hex.
// It keeps hostile digests such as "sha256:../../x" out of paths.
func parseDigest(d string) (string, error) {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 2*sha256.Size {
		return "", fmt.Errorf("cache: invalid digest %q", d)
	}
	for _, c := range h {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", fmt.Errorf("cache: invalid digest %q", d)
		}
	}
	return h, nil
}

func (s *Store) blobPath(digest string) (string, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.blobs, h), nil
}

// WriteBlob stores the content of r and returns its digest and size. If want
// is not empty ("sha256:<hex>") the content must match it, and if a blob with
// that digest already exists r is not read at all. The content is streamed
// to a temp file, fsynced, verified and renamed into place, so a blob is
// either absent or complete. Concurrent writes of the same content, from
// goroutines or processes, all succeed and leave one copy.
func (s *Store) WriteBlob(ctx context.Context, r io.Reader, want string) (digest string, size int64, err error) {
	if want != "" {
		p, err := s.blobPath(want)
		if err != nil {
			return "", 0, fmt.Errorf("write blob: %w", err)
		}
		if fi, err := os.Stat(p); err == nil {
			return want, fi.Size(), nil
		}
	}
	digest, size, err = s.writeBlob(ctx, r, want)
	if err != nil {
		if want != "" {
			return "", 0, fmt.Errorf("write blob %s: %w", want, err)
		}
		return "", 0, fmt.Errorf("write blob: %w", err)
	}
	return digest, size, nil
}

func (s *Store) writeBlob(ctx context.Context, r io.Reader, want string) (digest string, size int64, err error) {
	f, err := s.createTemp()
	if err != nil {
		return "", 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(f, h), ctxReader{ctx, r})
	if err != nil {
		return "", 0, err
	}
	digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	if want != "" && digest != want {
		return "", 0, fmt.Errorf("%w: content has digest %s (%d bytes)", ErrCorrupt, digest, size)
	}
	if err = f.Sync(); err != nil {
		return "", 0, err
	}
	if err = f.Close(); err != nil {
		return "", 0, err
	}
	if err = os.Rename(f.Name(), filepath.Join(s.blobs, digest[len("sha256:"):])); err != nil {
		return "", 0, err
	}
	return digest, size, syncDir(s.blobs)
}

// OpenBlob opens a blob for reading. The reader verifies the content against
// the digest when it reaches EOF; on a mismatch (a corrupt or truncated
// blob) it removes the blob and its Read returns an error wrapping
// ErrCorrupt that names the blob. A missing blob gives ErrNotFound.
func (s *Store) OpenBlob(ctx context.Context, digest string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := s.openBlobFile("open", digest)
	if err != nil {
		return nil, err
	}
	return &verifyReader{ctx: ctx, f: f, h: sha256.New(), digest: digest}, nil
}

// openBlobFile opens the file of the blob digest for op (the verb its
// errors start with); a missing blob is an error wrapping ErrNotFound.
func (s *Store) openBlobFile(op, digest string) (*os.File, error) {
	p, err := s.blobPath(digest)
	if err != nil {
		return nil, fmt.Errorf("%s blob: %w", op, err)
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s blob %s: %w", op, digest, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%s blob %s: %w", op, digest, err)
	}
	return f, nil
}

type verifyReader struct {
	ctx    context.Context
	f      *os.File
	h      hash.Hash
	digest string
	err    error
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if err := v.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := v.f.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF {
		err = v.verify()
		v.err = err
	} else if err != nil {
		err = fmt.Errorf("read blob %s: %w", v.digest, err)
		v.err = err
	}
	return n, err
}

func (v *verifyReader) verify() error {
	got := "sha256:" + hex.EncodeToString(v.h.Sum(nil))
	if got == v.digest {
		return io.EOF
	}
	return fmt.Errorf("read blob %s: %w", v.digest, removeCorrupt(v.f, v.digest, got))
}

// removeCorrupt removes the blob file f, found to hold content of digest
// got instead of digest, and returns the error that says so. Only the
// file read is removed: a concurrent writer may have renamed a good copy
// over it since it was opened.
func removeCorrupt(f *os.File, digest, got string) error {
	if fi, err := f.Stat(); err == nil {
		if cur, err := os.Stat(f.Name()); err == nil && os.SameFile(fi, cur) {
			os.Remove(f.Name())
		}
	}
	return &CorruptBlobError{Digest: digest, Got: got, Removed: true}
}

// RangeWriter takes bytes of a file by range, copied by the kernel
// (copy_file_range(2)) rather than through user space: an archive being
// written.
type RangeWriter interface {
	// WriteFileRange writes the n bytes of f at off and returns how many
	// it wrote: fewer only with an error, or when f ends first.
	WriteFileRange(f *os.File, off, n int64) (int64, error)
}

// CopyBlob writes the blob digest to w as one file range and returns its
// size, while another goroutine hashes the file from the page cache. As
// with OpenBlob, content that does not match the digest removes the blob
// and the error wraps ErrCorrupt (w has then taken bytes that are not
// the blob's); a missing blob gives ErrNotFound.
func (s *Store) CopyBlob(ctx context.Context, digest string, w RangeWriter) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	f, err := s.openBlobFile("copy", digest)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("copy blob %s: %w", digest, err)
	}
	size := fi.Size()
	hashed := make(chan error, 1)
	h := sha256.New()
	go func() {
		_, err := io.Copy(h, ctxReader{ctx, io.NewSectionReader(f, 0, size)})
		hashed <- err
	}()
	n, err := w.WriteFileRange(f, 0, size)
	herr := <-hashed
	if err == nil && n < size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		err = herr
	}
	if err != nil {
		return n, fmt.Errorf("copy blob %s: %w", digest, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return n, fmt.Errorf("copy blob %s: %w", digest, removeCorrupt(f, digest, got))
	}
	return n, nil
}

// CorruptBlobError says that the content of blob Digest hashes to Got (a
// flipped byte, a truncated file). errors.Is(err, ErrCorrupt) is true.
type CorruptBlobError struct {
	Digest, Got string
	// Removed says the blob was deleted, so a later write stores it again.
	Removed bool
}

func (e *CorruptBlobError) Error() string {
	s := "corrupt: content has digest " + e.Got
	if e.Removed {
		s += "; blob removed"
	}
	return s
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptBlobError) Is(target error) bool { return target == ErrCorrupt }

// VerifyBlob reads the whole blob and checks it against its digest without
// changing the store: nil, an error wrapping ErrNotFound, or one wrapping a
// *CorruptBlobError (Removed false).
func (s *Store) VerifyBlob(ctx context.Context, digest string) error {
	f, err := s.openBlobFile("verify", digest)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return fmt.Errorf("verify blob %s: %w", digest, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("verify blob %s: %w", digest, &CorruptBlobError{Digest: digest, Got: got})
	}
	return nil
}

func (v *verifyReader) Close() error { return v.f.Close() }

// ReadBlob returns the verified content of a blob.
func (s *Store) ReadBlob(ctx context.Context, digest string) ([]byte, error) {
	rc, err := s.OpenBlob(ctx, digest)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// PeekBlob returns the verified content of a blob as ReadBlob does, but
// leaves a damaged blob in place (an error wrapping a *CorruptBlobError
// with Removed false): for diagnosis, which must not change the store.
func (s *Store) PeekBlob(ctx context.Context, digest string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := s.blobPath(digest)
	if err != nil {
		return nil, fmt.Errorf("read blob: %w", err)
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read blob %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", digest, err)
	}
	sum := sha256.Sum256(data)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != digest {
		return nil, fmt.Errorf("read blob %s: %w", digest, &CorruptBlobError{Digest: digest, Got: got})
	}
	return data, nil
}

// HasBlob reports whether a blob with the digest is stored. It does not
// verify the content.
func (s *Store) HasBlob(digest string) bool {
	p, err := s.blobPath(digest)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// BlobSize returns the stored size of a blob, or ErrNotFound.
func (s *Store) BlobSize(digest string) (int64, error) {
	fi, err := s.statBlob(digest)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// BlobTime returns when a blob was stored, or ErrNotFound: a blob is
// written once and never rewritten, so its file's modification time is
// when this store first got it (pulled, imported or built it).
func (s *Store) BlobTime(digest string) (time.Time, error) {
	fi, err := s.statBlob(digest)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime().UTC(), nil
}

func (s *Store) statBlob(digest string) (os.FileInfo, error) {
	p, err := s.blobPath(digest)
	if err != nil {
		return nil, fmt.Errorf("stat blob: %w", err)
	}
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("stat blob %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("stat blob %s: %w", digest, err)
	}
	return fi, nil
}

// RemoveBlob deletes a blob. Removing an absent blob is not an error.
func (s *Store) RemoveBlob(ctx context.Context, digest string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := s.blobPath(digest)
	if err != nil {
		return fmt.Errorf("remove blob: %w", err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove blob %s: %w", digest, err)
	}
	return nil
}
