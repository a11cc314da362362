package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// hashingRangeWriter passes a layer tar to a FileRangeWriter and hashes
// the same bytes on another goroutine: the tar's headers and small files
// as they are written, the ranges of larger files by reading them again
// from the page cache while the kernel copies them. The cost of checking
// the digest is then one more read of each file, off the critical path on
// a machine with a core to spare, and no copy of file contents through
// user space on the way to w.
type hashingRangeWriter struct {
	w    FileRangeWriter
	work chan hashWork
	free chan []byte
	buf  []byte // pending written bytes, not yet sent
	done chan struct{}
	h    hash.Hash
	err  error // the hasher's read error, valid after done
}

// hashWork is bytes to hash or a range of a file (which the hasher closes).
type hashWork struct {
	data []byte
	f    *os.File
	off  int64
	n    int64
}

const hashChunk = 256 << 10

func newHashingRangeWriter(w FileRangeWriter) *hashingRangeWriter {
	hw := &hashingRangeWriter{
		w:    w,
		work: make(chan hashWork, 16),
		free: make(chan []byte, 4),
		buf:  make([]byte, 0, hashChunk),
		done: make(chan struct{}),
		h:    sha256.New(),
	}
	go hw.hash()
	return hw
}

func (hw *hashingRangeWriter) hash() {
	defer close(hw.done)
	buf := make([]byte, 1<<20)
	for wk := range hw.work {
		if wk.f == nil {
			hw.h.Write(wk.data)
			select {
			case hw.free <- wk.data[:0]:
			default:
			}
			continue
		}
		if hw.err == nil {
			n, err := io.CopyBuffer(hw.h, io.NewSectionReader(wk.f, wk.off, wk.n), buf)
			if err == nil && n < wk.n {
				err = fmt.Errorf("%s shrank while serializing", wk.f.Name())
			}
			if err != nil {
				hw.err = fmt.Errorf("hash %s: %w", wk.f.Name(), err)
			}
		}
		wk.f.Close()
	}
}

func (hw *hashingRangeWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.buf = append(hw.buf, p[:n]...)
	if len(hw.buf) >= hashChunk {
		hw.flush()
	}
	return n, err
}

func (hw *hashingRangeWriter) flush() {
	if len(hw.buf) == 0 {
		return
	}
	hw.work <- hashWork{data: hw.buf}
	select {
	case hw.buf = <-hw.free:
	default:
		hw.buf = make([]byte, 0, hashChunk)
	}
}

func (hw *hashingRangeWriter) WriteFileRange(f *os.File, off, n int64) (int64, error) {
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return 0, fmt.Errorf("dup %s: %w", f.Name(), err)
	}
	hw.flush()
	hw.work <- hashWork{f: os.NewFile(uintptr(fd), f.Name()), off: off, n: n}
	return hw.w.WriteFileRange(f, off, n)
}

// sum stops the hasher and returns the digest of everything written
// ("sha256:<hex>"), or the hasher's read error.
func (hw *hashingRangeWriter) sum() (string, error) {
	hw.flush()
	close(hw.work)
	<-hw.done
	if hw.err != nil {
		return "", hw.err
	}
	return "sha256:" + hex.EncodeToString(hw.h.Sum(nil)), nil
}
