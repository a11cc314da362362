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
// group names; callers add entries in sorted order.
type detTar struct {
	ctx context.Context
	tw  *tar.Writer
}

func (d *detTar) dir(name string) error {
	return d.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: epoch})
}

func (d *detTar) file(name string, data []byte) error {
	return d.stream(name, int64(len(data)), io.NopCloser(bytes.NewReader(data)))
}

// stream writes exactly size bytes from rc as the regular file name and
// closes rc; a stream of any other length is an error.
func (d *detTar) stream(name string, size int64, rc io.ReadCloser) error {
	defer rc.Close()
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: epoch}
	if err := d.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	r := contextReader{ctx: d.ctx, r: rc}
	if _, err := io.CopyN(d.tw, r, size); err != nil {
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
	return rc.Close()
}

func (d *detTar) blobs(set blobSet) error {
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := d.dir(dir); err != nil {
			return err
		}
	}
	for _, b := range set.sorted() {
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
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temp for %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	dt := &detTar{ctx: ctx, tw: tar.NewWriter(bw)}
	if err := fill(dt); err != nil {
		return err
	}
	if err := dt.tw.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := finish(ctx, f, path); err != nil {
		return err
	}
	return nil
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
