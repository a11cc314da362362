package snapshot

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
)

// Compression is the compression format of a layer or archive stream.
type Compression int

// The formats Decompress recognises by their magic bytes.
const (
	Uncompressed Compression = iota
	Gzip
	Bzip2
	Xz
	Zstd
)

// String returns the format's common name ("gzip", "zstd", ...).
func (c Compression) String() string {
	switch c {
	case Uncompressed:
		return "uncompressed"
	case Gzip:
		return "gzip"
	case Bzip2:
		return "bzip2"
	case Xz:
		return "xz"
	case Zstd:
		return "zstd"
	}
	return "Compression(" + strconv.Itoa(int(c)) + ")"
}

const (
	// axPeekSize is how much of a stream IsArchive looks at: enough
	// compressed input to yield the first tar header.
	axPeekSize     = 64 << 10
	axTarBlockSize = 512
)

// axDetect names the compression of a stream that starts with head, by
// the formats' magic bytes.
func axDetect(head []byte) Compression {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b, 0x08}):
		return Gzip
	case bytes.HasPrefix(head, []byte("BZh")):
		return Bzip2
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return Xz
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	}
	return Uncompressed
}

// Decompress detects the compression of r by its magic bytes and returns a
// reader of the decompressed stream (r itself, buffered, when it is not
// compressed). Errors in the compressed data surface from Read, naming the
// format. Close releases decoder goroutines and, for xz, stops the `xz -d`
// child process. Decompress does not bound the output: Apply's limits
// (WithLimits) stop decompression bombs.
func Decompress(r io.Reader) (io.ReadCloser, Compression, error) {
	br := bufio.NewReader(r)
	head, err := br.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, Uncompressed, fmt.Errorf("detect compression: %w", err)
	}
	c := axDetect(head)
	rc, err := axOpen(br, c)
	if err != nil {
		return nil, c, err
	}
	return rc, c, nil
}

// axOpen starts decompressing r as format c.
func axOpen(r io.Reader, c Compression) (io.ReadCloser, error) {
	switch c {
	case Gzip:
		zr, err := pgzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("decompress gzip: %w", err)
		}
		return axNamedReader{rc: zr, c: c}, nil
	case Bzip2:
		return axNamedReader{rc: io.NopCloser(bzip2.NewReader(r)), c: c}, nil
	case Xz:
		return axStartXz(r)
	case Zstd:
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("decompress zstd: %w", err)
		}
		return axNamedReader{rc: zr.IOReadCloser(), c: c}, nil
	}
	return io.NopCloser(r), nil
}

// axNamedReader prefixes decoding errors with the format's name.
type axNamedReader struct {
	rc io.ReadCloser
	c  Compression
}

func (n axNamedReader) Read(p []byte) (int, error) {
	k, err := n.rc.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("decompress %s: %w", n.c, err)
	}
	return k, err
}

func (n axNamedReader) Close() error { return n.rc.Close() }

// axXzReader reads the output of an `xz -d -c -q` child process, the way
// moby decompresses xz (no pure-Go xz decoder in the standard library).
type axXzReader struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr *bytes.Buffer
	waited bool
	err    error
}

func axStartXz(r io.Reader) (io.ReadCloser, error) {
	bin, err := exec.LookPath("xz")
	if err != nil {
		return nil, fmt.Errorf("decompress xz: xz command not found (install xz-utils): %w", err)
	}
	cmd := exec.Command(bin, "-d", "-c", "-q")
	cmd.Stdin = r
	x := &axXzReader{cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = x.stderr
	if x.out, err = cmd.StdoutPipe(); err != nil {
		return nil, fmt.Errorf("decompress xz: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("decompress xz: %w", err)
	}
	return x, nil
}

func (x *axXzReader) Read(p []byte) (int, error) {
	n, err := x.out.Read(p)
	if errors.Is(err, io.EOF) {
		if werr := x.wait(); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// wait reaps the child once and remembers how it ended.
func (x *axXzReader) wait() error {
	if x.waited {
		return x.err
	}
	x.waited = true
	if err := x.cmd.Wait(); err != nil {
		msg := strings.TrimSpace(x.stderr.String())
		x.err = fmt.Errorf("decompress xz: %s: %w", msg, err)
	}
	return x.err
}

// Close stops the child if it is still running.
func (x *axXzReader) Close() error {
	if !x.waited {
		_ = x.cmd.Process.Kill()
		_ = x.wait()
	}
	return nil
}

// IsArchive reports whether r holds a tar archive, compressed or not, by
// looking at its first bytes; ADD uses it to tell archives from other files
// whatever their names. The returned reader replays the whole stream. An
// error reading r is returned together with a reader of what was read.
func IsArchive(r io.Reader) (bool, io.Reader, error) {
	head := make([]byte, axPeekSize)
	n, err := io.ReadFull(r, head)
	head = head[:n]
	replay := io.MultiReader(bytes.NewReader(head), r)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return false, bytes.NewReader(head), fmt.Errorf("detect archive: %w", err)
	}
	c := axDetect(head)
	if c == Uncompressed {
		return axIsTarHeader(head), replay, nil
	}
	block, err := axDecompressHead(head, c)
	return err == nil && axIsTarHeader(block), replay, nil
}

// axDecompressHead decompresses the first tar block of a stream prefix.
func axDecompressHead(head []byte, c Compression) ([]byte, error) {
	rc, err := axOpen(bytes.NewReader(head), c)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	block := make([]byte, axTarBlockSize)
	if _, err := io.ReadFull(rc, block); err != nil {
		return nil, err
	}
	return block, nil
}

// axIsTarHeader reports whether b starts with a ustar (POSIX or GNU) tar
// header whose checksum is right.
func axIsTarHeader(b []byte) bool {
	if len(b) < axTarBlockSize {
		return false
	}
	magic := b[257:263]
	if string(magic) != "ustar\x00" && string(magic) != "ustar " {
		return false
	}
	field := strings.Trim(string(b[148:156]), " \x00")
	want, err := strconv.ParseInt(field, 8, 64)
	if err != nil {
		return false
	}
	var unsigned, signed int64
	for i, c := range b[:axTarBlockSize] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return want == unsigned || want == signed
}
