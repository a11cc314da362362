package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"
)

// addDownload is an ADD <url> source fetched at prepare time, so that its
// content digest can go into the step's cache key.
type addDownload struct {
	url     string
	file    string    // host path of the downloaded content
	name    string    // file name from the URL path ("__unnamed__" if none)
	digest  string    // "sha256:<hex>" of the content
	modTime time.Time // from Last-Modified; the download time without it
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
// optional "sha256:<hex>" checksum. A non-200 status, a broken body or a
// redirect loop is an error and leaves no file behind.
func addFetch(ctx context.Context, client *http.Client, tempDir, rawURL, checksum string) (dl *addDownload, err error) {
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
	if _, err = io.Copy(io.MultiWriter(f, h), resp.Body); err != nil {
		return nil, fmt.Errorf("fetch %s: read body: %w", rawURL, err)
	}
	if err = f.Close(); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if err = addVerifyChecksum(rawURL, checksum, digest); err != nil {
		return nil, err
	}
	return &addDownload{
		url: rawURL, file: f.Name(), name: addFileName(rawURL), digest: digest,
		modTime: addLastModified(resp.Header.Get("Last-Modified")),
	}, nil
}

// addVerifyChecksum compares an ADD --checksum value with the digest.
func addVerifyChecksum(rawURL, want, got string) error {
	if want == "" {
		return nil
	}
	algo, hexPart, ok := strings.Cut(want, ":")
	if !ok || algo != "sha256" || len(hexPart) != 2*sha256.Size {
		return fmt.Errorf("invalid checksum %q: want sha256:<64 hex digits>", want)
	}
	if _, err := hex.DecodeString(hexPart); err != nil {
		return fmt.Errorf("invalid checksum %q: %w", want, err)
	}
	if !strings.EqualFold(want, got) {
		return fmt.Errorf("fetch %s: checksum mismatch: want %s, got %s", rawURL, want, got)
	}
	return nil
}

func addLastModified(v string) time.Time {
	if t, err := http.ParseTime(v); err == nil {
		return t
	}
	return time.Now()
}
