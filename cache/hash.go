package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// racyWindow guards against the "racy git" problem: a file changed within a
// timestamp tick of being hashed could keep its ctime, so a file whose ctime
// is this close to the start of hashing is hashed but not memoized. It is
// well above the kernel's coarse timestamp granularity (one jiffy, ≤ 10ms).
const racyWindow = 100 * time.Millisecond

// maxHashAttempts bounds retries when a file changes while it is read.
const maxHashAttempts = 3

// fileStat is the part of a file's metadata that must be unchanged for a
// memoized hash to be reused.
type fileStat struct {
	Size  int64
	Mtime int64 // ns
	Ctime int64 // ns
	Ino   uint64
	Dev   uint64
	Mode  uint32
}

func statOf(fi os.FileInfo) (fileStat, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStat{}, false
	}
	return fileStat{
		Size:  fi.Size(),
		Mtime: fi.ModTime().UnixNano(),
		Ctime: st.Ctim.Nano(),
		Ino:   st.Ino,
		Dev:   uint64(st.Dev),
		Mode:  st.Mode,
	}, true
}

// HashFile returns "sha256:<hex>" of the content of the regular file at
// path. fi is the caller's Lstat of path (nil: HashFile stats it). The
// result is memoized by (absolute path, size, mtime, ctime, inode, device,
// mode), so an unchanged file is read once, across processes once
// FlushHashes has saved the memo; any change of content changes the ctime
// and therefore forces a rehash. Safe for concurrent use.
func (s *Store) HashFile(ctx context.Context, path string, fi os.FileInfo) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	if fi == nil {
		if fi, err = os.Lstat(abs); err != nil {
			return "", fmt.Errorf("hash %s: %w", path, err)
		}
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("hash %s: not a regular file (%s)", path, fi.Mode().Type())
	}
	st, ok := statOf(fi)
	if ok {
		if sum, hit := s.hashes.get(abs, st); hit {
			return formatSum(sum), nil
		}
	}
	start := time.Now()
	sum, st, err := hashStable(ctx, abs)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	if st.Ctime < start.Add(-racyWindow).UnixNano() {
		s.hashes.put(abs, st, sum)
	}
	return formatSum(sum), nil
}

func formatSum(sum [sha256.Size]byte) string { return "sha256:" + hex.EncodeToString(sum[:]) }

// hashStable hashes a file and returns the metadata that the content belongs
// to, retrying if the file changes while it is read.
func hashStable(ctx context.Context, path string) ([sha256.Size]byte, fileStat, error) {
	for range maxHashAttempts {
		sum, st, stable, err := hashOnce(ctx, path)
		if err != nil || stable {
			return sum, st, err
		}
	}
	return [sha256.Size]byte{}, fileStat{}, fmt.Errorf("file changed while being read, %d times", maxHashAttempts)
}

func hashOnce(ctx context.Context, path string) (sum [sha256.Size]byte, st fileStat, stable bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return sum, st, false, err
	}
	defer f.Close()
	before, err := fstat(f)
	if err != nil {
		return sum, st, false, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return sum, st, false, err
	}
	after, err := fstat(f)
	if err != nil {
		return sum, st, false, err
	}
	h.Sum(sum[:0])
	return sum, after, before == after, nil
}

func fstat(f *os.File) (fileStat, error) {
	fi, err := f.Stat()
	if err != nil {
		return fileStat{}, err
	}
	if !fi.Mode().IsRegular() {
		return fileStat{}, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	st, _ := statOf(fi)
	return st, nil
}

// HashFiles hashes many files in parallel (2×NumCPU at a time) with
// HashFile and returns the digests in the order of paths.
func (s *Store) HashFiles(ctx context.Context, paths []string) ([]string, error) {
	out := make([]string, len(paths))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU() * 2)
	for i, p := range paths {
		g.Go(func() error {
			fi, err := os.Lstat(p)
			if err != nil {
				return fmt.Errorf("hash %s: %w", p, err)
			}
			out[i], err = s.HashFile(gctx, p, fi)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// FlushHashes saves the memo entries added since the last flush. Each shard
// is merged with what other processes saved meanwhile and replaced
// atomically, so concurrent builders never see a torn memo; for a path both
// wrote, the last writer wins.
func (s *Store) FlushHashes(ctx context.Context) error {
	if err := s.hashes.flush(ctx); err != nil {
		return fmt.Errorf("save hash memo: %w", err)
	}
	return nil
}
