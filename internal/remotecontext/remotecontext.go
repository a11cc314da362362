// Package remotecontext fetches build inputs that are not local
// directories, as BuildKit's Dockerfile frontend takes them: an HTTP(S)
// URL (a tar archive, plain or compressed, or a single Dockerfile, told
// apart by content) and a tar archive on standard input. Git URLs are
// internal/gitsource's.
package remotecontext

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/builder-dev/builder/snapshot"
)

// IsURL reports whether s is an http(s) URL.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// File is a downloaded or received file.
type File struct {
	Path string
	// LastModified is the response's valid Last-Modified header, nil
	// without one.
	LastModified *time.Time
	// Archive tells whether the file is a tar archive, compressed or not.
	Archive bool
}

// Download fetches url into the file dir/name. A status other than 200
// is an error.
func Download(ctx context.Context, client *http.Client, url, dir, name string) (*File, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s: unexpected status %s", url, resp.Status)
	}
	f, err := save(resp.Body, filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", url, err)
	}
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		t = t.UTC()
		f.LastModified = &t
	}
	return f, nil
}

// Save writes r (standard input) to the file path and tells whether it is
// an archive.
func Save(r io.Reader, path string) (*File, error) { return save(r, path) }

func save(r io.Reader, path string) (_ *File, err error) {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := out.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	ok, replay, err := snapshot.IsArchive(r)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(out, replay); err != nil {
		return nil, err
	}
	return &File{Path: path, Archive: ok}, nil
}

// Extract unpacks the archive f into dest, an existing directory, as ADD
// unpacks a local archive: entries cannot reach outside dest, ".wh."
// names are ordinary files, and files keep the archive's owners.
func Extract(ctx context.Context, f *File, dest string) error {
	in, err := os.OpenFile(f.Path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	rc, _, err := snapshot.Decompress(in)
	if err != nil {
		return fmt.Errorf("extract build context: %w", err)
	}
	defer rc.Close()
	if _, err := snapshot.Apply(ctx, dest, rc, snapshot.WithNoWhiteouts()); err != nil {
		return fmt.Errorf("extract build context: %w", err)
	}
	return nil
}

// Newest returns the newest modification time of the regular files in
// the archive f, as BuildKit takes SOURCE_DATE_EPOCH from an HTTP archive
// without Last-Modified; nil when f is no archive or holds no file.
func Newest(f *File) (*time.Time, error) {
	if !f.Archive {
		return nil, nil
	}
	in, err := os.Open(f.Path)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	rc, _, err := snapshot.Decompress(in)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var newest *time.Time
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return newest, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read build context archive: %w", err)
		}
		if !hdr.FileInfo().Mode().IsRegular() {
			continue
		}
		if t := hdr.ModTime.UTC(); newest == nil || t.After(*newest) {
			newest = &t
		}
	}
}

// Epoch is the time SOURCE_DATE_EPOCH=context (or a named context's name)
// takes from a downloaded file: its Last-Modified, else the newest file
// of the archive.
func Epoch(f *File) (*time.Time, error) {
	if f.LastModified != nil {
		return f.LastModified, nil
	}
	return Newest(f)
}
