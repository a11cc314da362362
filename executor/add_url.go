package executor

import (
	"context"
	"crypto/sha256"
	_ "crypto/sha512" // sha384 and sha512 checksums
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// addDownload is an ADD <url> source fetched at prepare time, so that its
// content digest can go into the step's cache key.
type addDownload struct {
	url     string
	file    string    // host path of the downloaded content
	name    string    // file name from the URL path ("__unnamed__" if none)
	digest  string    // "sha256:<hex>" of the content
	modTime time.Time // from Last-Modified; the download time without it
	// lastModified tells whether the server sent Last-Modified.
	lastModified bool
}

// addIsURL reports whether a source is an http(s) URL.
func addIsURL(src string) bool {
	return strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://")
}

// addFileName returns the destination name BuildKit gives a URL source.
func addFileName(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err == nil {
		if base := path.Base(u.Path); base != "." && base != "/" && base != "" {
			return base
		}
	}
	return "__unnamed__"
}

// addFetch downloads rawURL into a temp file in tempDir and verifies the
// optional checksum ("sha256:<hex>", or sha384, sha512). A non-200 status,
// a broken body or a redirect loop is an error and leaves no file behind.
func addFetch(ctx context.Context, client *http.Client, tempDir, rawURL, checksum string) (dl *addDownload, err error) {
	want, err := addParseChecksum(checksum)
	if err != nil {
		return nil, err
	}
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s: unexpected status %s", rawURL, resp.Status)
	}
	f, err := os.CreateTemp(tempDir, "add-url-*")
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	w := io.MultiWriter(f, h)
	var wantHash = h
	if want != "" && want.Algorithm() != digest.SHA256 {
		wantHash = want.Algorithm().Hash()
		w = io.MultiWriter(w, wantHash)
	}
	if _, err = io.Copy(w, resp.Body); err != nil {
		return nil, fmt.Errorf("fetch %s: read body: %w", rawURL, err)
	}
	if err = f.Close(); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	sum := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if want != "" {
		if got := digest.NewDigest(want.Algorithm(), wantHash); got != want {
			err = fmt.Errorf("digest mismatch for %s: %s (expected: %s)", rawURL, got, want)
			return nil, err
		}
	}
	return &addDownload{
		url: rawURL, file: f.Name(), name: addFileName(rawURL), digest: sum,
		modTime:      addLastModified(resp.Header.Get("Last-Modified")),
		lastModified: validHTTPTime(resp.Header.Get("Last-Modified")),
	}, nil
}

// addParseChecksum parses an ADD --checksum value, with go-digest's errors
// ("invalid checksum digest format", "unsupported digest algorithm") as
// BuildKit reports them.
func addParseChecksum(s string) (digest.Digest, error) {
	if s == "" {
		return "", nil
	}
	d, err := digest.Parse(s)
	if err != nil {
		return "", fmt.Errorf("invalid checksum %q: %w", s, err)
	}
	return d, nil
}

func validHTTPTime(v string) bool {
	_, err := http.ParseTime(v)
	return err == nil
}

func addLastModified(v string) time.Time {
	if t, err := http.ParseTime(v); err == nil {
		return t
	}
	return time.Now()
}
