package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
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
// path: HashFileMeta's Digest.
func (s *Store) HashFile(ctx context.Context, path string, fi os.FileInfo) (string, error) {
	sum, err := s.HashFileMeta(ctx, path, fi)
	return sum.Digest, err
}

// ErrFileReplaced is HashFileMeta's error when the file it read at a path
// is not the one the caller's stat of that path described (another inode).
var ErrFileReplaced = errors.New("replaced by another file since it was listed")

// FileSum is what HashFileMeta learns about a regular file.
type FileSum struct {
	Digest     string // "sha256:<hex>" of the content
	Capability []byte // the security.capability xattr; nil when absent
}

// HashFileMeta returns the content digest and the security.capability
// xattr of the regular file at path. fi is the caller's Lstat of path
// (nil: HashFileMeta stats it). The result is memoized by (absolute path,
// size, mtime, ctime, inode, device, mode), so an unchanged file is read
// once, across processes once FlushHashes has saved the memo; any change of
// content or xattrs changes the ctime and therefore forces a rehash. A
// file read at path that is another inode than fi's is ErrFileReplaced.
// Safe for concurrent use.
func (s *Store) HashFileMeta(ctx context.Context, path string, fi os.FileInfo) (FileSum, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return FileSum{}, fmt.Errorf("hash %s: %w", path, err)
	}
	if fi == nil {
		if fi, err = os.Lstat(abs); err != nil {
			return FileSum{}, fmt.Errorf("hash %s: %w", path, err)
		}
	}
	if !fi.Mode().IsRegular() {
		return FileSum{}, fmt.Errorf("hash %s: not a regular file (%s)", path, fi.Mode().Type())
	}
	st, ok := statOf(fi)
	var before *fileStat
	if ok {
		if e, hit := s.hashes.get(abs, st); hit {
			return e.fileSum(), nil
		}
		before = &st
	}
	start := time.Now()
	bp := s.hashBufs.Get().(*[]byte)
	e, err := hashStable(ctx, abs, *bp, before)
	s.hashBufs.Put(bp)
	if err != nil {
		return FileSum{}, fmt.Errorf("hash %s: %w", path, err)
	}
	if ok && (e.st.Ino != st.Ino || e.st.Dev != st.Dev) {
		// Not the file the caller listed: one renamed over it, or a path
		// through a directory swapped for a symlink since — possibly to a
		// file outside the caller's tree, whose content must not pass
		// for the listed file's.
		return FileSum{}, fmt.Errorf("hash %s: %w", path, ErrFileReplaced)
	}
	if e.st.Ctime < start.Add(-racyWindow).UnixNano() {
		s.hashes.put(abs, e)
	}
	return e.fileSum(), nil
}

func (e memoEntry) fileSum() FileSum {
	fs := FileSum{Digest: formatSum(e.sum)}
	if e.capability != "" {
		fs.Capability = []byte(e.capability)
	}
	return fs
}

func formatSum(sum [sha256.Size]byte) string { return "sha256:" + hex.EncodeToString(sum[:]) }

// hashStable hashes a file, reads its capability xattr and returns them
// with the metadata that they belong to, retrying if the file changes while
// it is read. buf is the read buffer; before, when not nil, is the
// caller's Lstat of path, which the first attempt compares with the file's
// stat after reading instead of stat'ing the open file first.
func hashStable(ctx context.Context, path string, buf []byte, before *fileStat) (memoEntry, error) {
	for range maxHashAttempts {
		e, stable, err := hashOnce(ctx, path, buf, before)
		if err != nil || stable {
			return e, err
		}
		before = nil
	}
	return memoEntry{}, fmt.Errorf("file changed while being read, %d times", maxHashAttempts)
}

// hashOnce hashes the file at path once, through a plain descriptor
// (os.Open spends more system calls on a regular file: the netpoller is
// tried and refused) and buf, reading no more than the size it had when
// opened (or at stat0, the caller's earlier stat of it, when not nil): a
// file that grows or shrinks or is replaced meanwhile changes its stat, and
// stable is false.
func hashOnce(ctx context.Context, path string, buf []byte, stat0 *fileStat) (e memoEntry, stable bool, err error) {
	fd, err := openRead(path)
	if err != nil {
		return e, false, err
	}
	defer unix.Close(fd)
	var before fileStat
	if stat0 != nil {
		before = *stat0
	} else if before, err = fstat(fd); err != nil {
		return e, false, err
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, io.LimitReader(ctxReader{ctx, fdReader(fd)}, before.Size), buf); err != nil {
		return e, false, err
	}
	if e.capability, err = readCapability(fd); err != nil {
		return e, false, err
	}
	if e.st, err = fstat(fd); err != nil {
		return e, false, err
	}
	h.Sum(e.sum[:0])
	return e, before == e.st, nil
}

// openRead opens path read-only as a plain descriptor.
func openRead(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// fdReader reads a file descriptor.
type fdReader int

func (r fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(r), p)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// readCapability returns the security.capability xattr of fd ("" when
// absent or unsupported). Setting or removing it changes the ctime, so the
// memo key covers it.
func readCapability(fd int) (string, error) {
	var buf [256]byte
	n, err := unix.Fgetxattr(fd, "security.capability", buf[:])
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read xattrs: %w", err)
	}
	return string(buf[:n]), nil
}

func fstat(fd int) (fileStat, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fileStat{}, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fileStat{}, fmt.Errorf("not a regular file (mode %#o)", st.Mode)
	}
	return fileStat{
		Size:  st.Size,
		Mtime: st.Mtim.Nano(),
		Ctime: st.Ctim.Nano(),
		Ino:   st.Ino,
		Dev:   uint64(st.Dev),
		Mode:  st.Mode,
	}, nil
}

// HashFiles hashes many files in parallel (2×NumCPU at a time) with
// HashFile and returns the digests in the order of paths.
func (s *Store) HashFiles(ctx context.Context, paths []string) ([]string, error) {
	out := make([]string, len(paths))
	err := forEach(ctx, len(paths), func(ctx context.Context, i int) error {
		fi, err := os.Lstat(paths[i])
		if err != nil {
			return fmt.Errorf("hash %s: %w", paths[i], err)
		}
		out[i], err = s.HashFile(ctx, paths[i], fi)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// forEach calls fn(ctx, i) for every i in [0, n) on 2×NumCPU worker
// goroutines and returns the first error, after which the remaining calls
// are skipped. Long-lived workers (instead of a goroutine per file) keep
// the stack they grew hashing the first file.
func forEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	var next atomic.Int64
	for range min(n, runtime.NumCPU()*2) {
		g.Go(func() error {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := gctx.Err(); err != nil {
					return err
				}
				if err := fn(gctx, i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
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
