package executor

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The files a COPY writes and reads are plain descriptors (copyFD): for a
// regular file os.OpenFile spends more system calls (the netpoller is
// tried and refused), which on a tree of small files is a large part of
// the work.

// copyFD is an open file of a COPY.
type copyFD struct {
	fd   int
	name string
}

// copyOpen opens name with flags (O_CLOEXEC added).
func copyOpen(name string, flags int, perm uint32) (copyFD, error) {
	for {
		fd, err := unix.Open(name, flags|unix.O_CLOEXEC, perm)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return copyFD{fd: -1}, &os.PathError{Op: "open", Path: name, Err: err}
		}
		return copyFD{fd: fd, name: name}, nil
	}
}

func (f copyFD) Close() error {
	if err := unix.Close(f.fd); err != nil {
		return &os.PathError{Op: "close", Path: f.name, Err: err}
	}
	return nil
}

// Write writes all of p.
func (f copyFD) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := unix.Write(f.fd, p[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, &os.PathError{Op: "write", Path: f.name, Err: err}
		}
		n += k
	}
	return n, nil
}

func (f copyFD) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(f.fd, p)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, &os.PathError{Op: "read", Path: f.name, Err: err}
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// How copyData moves a file's bytes. A copier remembers the first method
// that works, so a destination that refuses one (overlayfs refuses
// copy_file_range from another file system) costs one failed call.
const (
	copyByRange    int32 = iota // copy_file_range(2): in the kernel, a reflink where the file system can
	copyBySendfile              // sendfile(2): in the kernel, across file systems
	copyByBuffer                // read and write through a pooled buffer
)

// copyChunk is the most one copy_file_range or sendfile call moves.
const copyChunk = 1 << 30

// copier copies file contents for the parallel writers of one Apply.
type copier struct {
	method atomic.Int32
	bufs   sync.Pool // *[]byte, for copyByBuffer
}

// copyData copies src from its current offset to its end into dst, the
// first way the copier's method allows that works. size is the size src
// had when it was selected (-1: unknown): a kernel copy asks for one byte
// more, and a copy that stops short at exactly size has reached the end
// without the call that would return 0 (one system call less per file).
func (c *copier) copyData(dst, src copyFD, size int64) error {
	for {
		m := c.method.Load()
		done, err := c.copyDataBy(m, dst, src, size)
		if done || m == copyByBuffer {
			return err
		}
		c.method.CompareAndSwap(m, m+1)
	}
}

// copyError names the file a kernel copy's error is about: the
// destination when writing failed (a full disk or quota, a read-only or
// failing file system: what users must act on in the store), else the
// source.
func copyError(dst, src copyFD, err error) error {
	switch {
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT), errors.Is(err, unix.EROFS), errors.Is(err, unix.EFBIG):
		return &os.PathError{Op: "write", Path: dst.name, Err: err}
	}
	return &os.PathError{Op: "copy", Path: src.name, Err: err}
}

// copyDataBy copies with method m; done is false when m is not supported
// between these files and nothing was copied.
func (c *copier) copyDataBy(m int32, dst, src copyFD, size int64) (done bool, err error) {
	if m == copyByBuffer {
		return true, c.copyBuffered(dst, src)
	}
	var n int64
	for {
		want := copyAsk(size, n)
		var k int
		if m == copyByRange {
			k, err = unix.CopyFileRange(src.fd, nil, dst.fd, nil, want, 0)
		} else {
			k, err = unix.Sendfile(dst.fd, src.fd, nil, want)
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil && n == 0 && copyUnsupported(err) {
			return false, nil
		}
		if err != nil {
			return true, copyError(dst, src, err)
		}
		if k == 0 && n == 0 {
			// An empty file, or one of a file system whose files read
			// as empty to these calls (procfs, sysfs): read it.
			return true, c.copyBuffered(dst, src)
		}
		if k == 0 {
			return true, nil
		}
		n += int64(k)
		if n == size && k < want {
			return true, nil // short of the byte past size: the end
		}
	}
}

// copyAsk is how many bytes a kernel copy asks for after n of a file
// selected at size bytes (-1: unknown): one past the rest, so that a copy
// coming short at size is known to be at the end; whole chunks when the
// size is unknown or the file grew past it.
func copyAsk(size, n int64) int {
	if size > 0 && n < size && size-n < copyChunk {
		return int(size-n) + 1
	}
	return copyChunk
}

// copyUnsupported reports whether err says a kernel copy cannot be made
// between the two files.
func copyUnsupported(err error) bool {
	return errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) ||
		errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EBADF)
}

func (c *copier) copyBuffered(dst io.Writer, src io.Reader) error {
	bp, _ := c.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 256<<10)
		bp = &b
	}
	defer c.bufs.Put(bp)
	_, err := io.CopyBuffer(dst, src, *bp)
	return err
}

// futimens sets the access and modification times of the open file fd
// to mtime (utimensat with a NULL path).
func futimens(fd int, mtime time.Time) error {
	ts := [2]unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
