package executor

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/builder-dev/builder/snapshot"
)

// SourceEpoch returns the time of a remote file as BuildKit takes it for a
// SOURCE_DATE_EPOCH stage's ADD: the server's Last-Modified, else the
// newest regular file's mtime when the file is a tar archive (compressed
// or not), else nil. checksum, when set, must match the content. The
// download goes to a temporary file in tempDir, removed before returning.
func SourceEpoch(ctx context.Context, client *http.Client, tempDir, rawURL, checksum string) (*time.Time, error) {
	f := &addFetcher{client: client, tempDir: tempDir}
	dl, err := f.resolve(ctx, rawURL, checksum, false)
	if err != nil {
		return nil, err
	}
	defer dl.remove()
	if dl.lastModified {
		tm := dl.modTime.UTC()
		return &tm, nil
	}
	file, err := os.Open(dl.file)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	return archiveMaxTime(file), nil
}

// archiveMaxTime returns the newest mtime of the regular files in the tar
// stream r (compressed or not), or nil when r is not a readable archive or
// has no regular file.
func archiveMaxTime(r io.Reader) *time.Time {
	rc, _, err := snapshot.Decompress(r)
	if err != nil {
		return nil
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var newest *time.Time
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return newest
		}
		if err != nil {
			return nil
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if tm := hdr.ModTime.UTC(); newest == nil || tm.After(*newest) {
			newest = &tm
		}
	}
}
