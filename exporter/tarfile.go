package exporter

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/builder-dev/builder/internal/outfile"
)

// epoch is the modification time of every entry in archives we write, so
// that equal images give byte-identical archives.
var epoch = time.Unix(0, 0).UTC()

// blobEntry is one content-addressed file of an archive, opened only when
// it is written.
type blobEntry struct {
	hex  string
	size int64
	open func() (io.ReadCloser, error)
	// writeTo, if not nil, writes the blob's bytes itself (a stored
	// layer's tar, straight from its directory) and is used instead of
	// open.
	writeTo func(w io.Writer) (int64, error)
}

// blobSet collects blobs by digest, keeping the first of duplicates.
type blobSet map[string]blobEntry

func (s blobSet) add(b blobEntry) {
	if _, ok := s[b.hex]; !ok {
		s[b.hex] = b
	}
}

func (s blobSet) addBytes(hex string, data []byte) {
	s.add(blobEntry{hex: hex, size: int64(len(data)), open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}})
}

func (s blobSet) sorted() []blobEntry {
	out := make([]blobEntry, 0, len(s))
	for _, b := range s {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].hex < out[j].hex })
	return out
}

// detTar writes a deterministic tar: fixed times and owners, no user or
// group names; callers add entries in an order that depends on the
// archive's content only (blobs in digest order, an OCI archive's
// compressed layers first in image order). archive/tar makes the
// headers; contents go to the archive writer directly, so a blob that
// writes itself can hand it file ranges (copy_file_range) instead of
// bytes.
type detTar struct {
	ctx      context.Context
	out      *archiveWriter
	dirsDone bool // blobs/ and blobs/sha256/ are written
}

func (d *detTar) header(hdr *tar.Header) error {
	return tar.NewWriter(d.out).WriteHeader(hdr)
}

const blockSize = 512

// headerAt writes hdr over the block reserved at offset at of the
// archive. hdr must fit one block: a name under 100 bytes, no PAX
// records (a size of 8 GiB or more is written in GNU's binary form).
func (d *detTar) headerAt(at int64, hdr *tar.Header) error {
	if hdr.Size >= 1<<33 {
		hdr.Format = tar.FormatGNU
	}
	var b bytes.Buffer
	if err := tar.NewWriter(&b).WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", hdr.Name, err)
	}
	if b.Len() != blockSize {
		return fmt.Errorf("write %s: header of %d bytes does not fit its block", hdr.Name, b.Len())
	}
	if err := d.out.flush(); err != nil {
		return fmt.Errorf("write %s: %w", hdr.Name, err)
	}
	if _, err := d.out.f.WriteAt(b.Bytes(), at); err != nil {
		return fmt.Errorf("write %s: %w", hdr.Name, err)
	}
	return nil
}

var zeroBlocks [1024]byte

// pad completes an entry's content of size bytes to a whole block.
func (d *detTar) pad(size int64) error {
	_, err := d.out.Write(zeroBlocks[:(512-size%512)%512])
	return err
}

// close writes the end of the archive: two zero blocks.
func (d *detTar) close() error {
	_, err := d.out.Write(zeroBlocks[:])
	return err
}

func (d *detTar) dir(name string) error {
	return d.header(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: epoch})
}

func (d *detTar) file(name string, data []byte) error {
	return d.stream(name, int64(len(data)), io.NopCloser(bytes.NewReader(data)))
}

func regHeader(name string, size int64) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: epoch}
}

// stream writes exactly size bytes from rc as the regular file name and
// closes rc; a stream of any other length is an error.
func (d *detTar) stream(name string, size int64, rc io.ReadCloser) error {
	defer rc.Close()
	if err := d.header(regHeader(name, size)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	r := contextReader{ctx: d.ctx, r: rc}
	if _, err := io.CopyN(d.out, r, size); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("write %s: %w", name, err)
	}
	var one [1]byte
	if n, err := io.ReadFull(r, one[:]); n > 0 {
		return fmt.Errorf("write %s: content longer than %d bytes", name, size)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := d.pad(size); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return rc.Close()
}

// streamTo writes the regular file name of size bytes that writeTo writes.
func (d *detTar) streamTo(name string, size int64, writeTo func(io.Writer) (int64, error)) error {
	if err := d.header(regHeader(name, size)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	start := d.out.n
	if _, err := writeTo(d.out); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if n := d.out.n - start; n != size {
		return fmt.Errorf("write %s: content of %d bytes, want %d", name, n, size)
	}
	if err := d.pad(size); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// archiveWriter writes an archive file through a buffer and takes file
// ranges (snapshot.FileRangeWriter) by copy_file_range(2): the kernel
// copies them, no byte passes through user space.
type archiveWriter struct {
	f  *os.File
	bw *bufio.Writer
	n  int64
	// started is the offset up to which write-back was started: the
	// final fsync then finds most of the archive on its way to disk.
	started int64
	// syncing is closed when the fsync syncBehind started returns (nil:
	// none started).
	syncing chan struct{}
}

// writeBackChunk is how much archive data may be dirty before its
// write-back is started.
const writeBackChunk = 32 << 20

func newArchiveWriter(f *os.File) *archiveWriter {
	return &archiveWriter{f: f, bw: bufio.NewWriterSize(f, 1<<20)}
}

func (a *archiveWriter) Write(p []byte) (int, error) {
	n, err := a.bw.Write(p)
	a.n += int64(n)
	a.startWriteBack()
	return n, err
}

// WriteFileRange copies n bytes of src at off to the end of the archive,
// starting the write-back of every chunk it copies.
func (a *archiveWriter) WriteFileRange(src *os.File, off, n int64) (int64, error) {
	if err := a.bw.Flush(); err != nil {
		return 0, err
	}
	var done int64
	for done < n {
		c, err := copyFileRange(a.f, src, off+done, min(n-done, writeBackChunk))
		done += c
		a.n += c
		a.startWriteBack()
		if err != nil || c == 0 {
			return done, err
		}
	}
	return done, nil
}

// startWriteBack asks the kernel to start writing the flushed archive
// bytes past started to disk (sync_file_range(2) without waiting), once a
// chunk has accumulated. It is only a hint: the fsync at the end is what
// makes the archive durable.
func (a *archiveWriter) startWriteBack() {
	flushed := a.n - int64(a.bw.Buffered())
	if flushed-a.started < writeBackChunk {
		return
	}
	_ = unix.SyncFileRange(int(a.f.Fd()), a.started, flushed-a.started, unix.SYNC_FILE_RANGE_WRITE)
	a.started = flushed
}

func (a *archiveWriter) flush() error { return a.bw.Flush() }

// syncBehind starts an fsync of the archive written so far on another
// goroutine, unless one is running: a producer that goes on checking
// what it copied (CopyBlob hashing a kept blob) then finds its bytes on
// disk when it is done, instead of the final fsync beginning only then.
// Writes may go on meanwhile; the final fsync still makes all of them
// durable, after waitSync.
func (a *archiveWriter) syncBehind() error {
	if err := a.bw.Flush(); err != nil {
		return err
	}
	if a.syncing != nil {
		select {
		case <-a.syncing:
		default:
			return nil
		}
	}
	done := make(chan struct{})
	a.syncing = done
	go func() {
		defer close(done)
		_ = a.f.Sync() // only a head start: the final fsync reports errors
	}()
	return nil
}

// waitSync waits for the fsync syncBehind started, if any.
func (a *archiveWriter) waitSync() {
	if a.syncing != nil {
		<-a.syncing
	}
}

// syncBehindRanges is an archiveWriter whose file ranges, once copied,
// start an fsync of the archive (syncBehind).
type syncBehindRanges struct{ *archiveWriter }

func (s syncBehindRanges) WriteFileRange(src *os.File, off, n int64) (int64, error) {
	c, err := s.archiveWriter.WriteFileRange(src, off, n)
	if err == nil {
		err = s.syncBehind()
	}
	return c, err
}

// truncate drops what was written from off on: the archive goes on from
// there.
func (a *archiveWriter) truncate(off int64) error {
	if err := a.bw.Flush(); err != nil {
		return err
	}
	if err := a.f.Truncate(off); err != nil {
		return err
	}
	if _, err := a.f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	a.n, a.started = off, min(a.started, off)
	return nil
}

// copyFileRange copies n bytes of src at off to dst's current offset with
// copy_file_range(2), falling back to read and write where the kernel or
// the file systems cannot. It stops early only at src's end or an error.
func copyFileRange(dst, src *os.File, off, n int64) (int64, error) {
	var done int64
	for done < n {
		c, err := unix.CopyFileRange(int(src.Fd()), &off, int(dst.Fd()), nil, int(min(n-done, 1<<30)), 0)
		if err != nil && done == 0 && fallbackErr(err) {
			return io.Copy(onlyWriter{dst}, io.NewSectionReader(src, off, n))
		}
		if err != nil {
			return done, fmt.Errorf("copy %s: %w", src.Name(), err)
		}
		if c == 0 {
			return done, nil // src ended
		}
		done += int64(c)
	}
	return done, nil
}

// fallbackErr reports copy_file_range errors that mean "not here" (old
// kernel, file systems that cannot, special files), not a failed copy.
func fallbackErr(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EBADF) || errors.Is(err, unix.EPERM)
}

// onlyWriter hides dst's ReadFrom, so the fallback copies with a buffer.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

// blobDirs writes the directories of blobs, once.
func (d *detTar) blobDirs() error {
	if d.dirsDone {
		return nil
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := d.dir(dir); err != nil {
			return err
		}
	}
	d.dirsDone = true
	return nil
}

func (d *detTar) blobs(set blobSet) error {
	if err := d.blobDirs(); err != nil {
		return err
	}
	for _, b := range set.sorted() {
		if b.writeTo != nil {
			if err := d.streamTo("blobs/sha256/"+b.hex, b.size, b.writeTo); err != nil {
				return err
			}
			continue
		}
		rc, err := b.open()
		if err != nil {
			return fmt.Errorf("open blob sha256:%s: %w", b.hex, err)
		}
		if err := d.stream("blobs/sha256/"+b.hex, b.size, rc); err != nil {
			return err
		}
	}
	return nil
}

// writeAtomic writes a tar to path through a temporary file in the same
// directory, synced and then renamed over path. A symlink at path is
// replaced, not followed; on any error or cancellation path keeps its old
// content and the temporary file is removed.
func writeAtomic(ctx context.Context, path string, fill func(*detTar) error) (err error) {
	inPlace, err := outfile.Target(path)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if inPlace {
		// A device or pipe: the archive (which may seek back) is made
		// in the temporary directory, then copied there.
		dir = ""
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temp for %s: %w", path, err)
	}
	dt := &detTar{ctx: ctx, out: newArchiveWriter(f)}
	defer func() {
		if err != nil {
			dt.out.waitSync()
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := fill(dt); err != nil {
		return err
	}
	if err := dt.close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := dt.out.flush(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	dt.out.waitSync()
	if inPlace {
		return copyOut(ctx, f, path)
	}
	if err := finish(ctx, f, path); err != nil {
		return err
	}
	return nil
}

// copyOut copies the archive f to path, which is written in place (a
// device or a pipe), and removes f.
func copyOut(ctx context.Context, f *os.File, path string) error {
	defer os.Remove(f.Name())
	defer f.Close()
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	out, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, f); err != nil {
		out.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return out.Close()
}

func finish(ctx context.Context, f *os.File, path string) error {
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.Name(), err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	return nil
}
