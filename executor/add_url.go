package executor

import (
	"context"
	"crypto/sha256"
	_ "crypto/sha512" // sha384 and sha512 checksums
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"runtime/debug"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// addDownload is an ADD <url> source, resolved at prepare time so that its
// content digest can go into the step's cache key. A download that a HEAD
// request revalidated (same ETag as the last one) has no file until the
// step needs its content: on a cache hit it is never fetched again.
type addDownload struct {
	url     string
	file    string    // host path of the downloaded content; "" until fetched
	name    string    // file name from the URL path ("__unnamed__" if none)
	digest  string    // "sha256:<hex>" of the content
	modTime time.Time // from Last-Modified; the Unix epoch without it (BuildKit)
	// lastModified tells whether the server sent a Last-Modified.
	lastModified bool
}

// addURLRecord is what a download leaves for revalidating its URL: the
// response's ETag (weak prefix dropped), the content digest and the
// Last-Modified header.
type addURLRecord struct {
	ETag         string `json:"etag"`
	Digest       string `json:"digest"`
	LastModified string `json:"last_modified,omitempty"`
}

// addURLMemo keeps the addURLRecord of the last download of each URL.
type addURLMemo interface {
	Get(ctx context.Context, url string) (addURLRecord, bool)
	Put(ctx context.Context, url string, rec addURLRecord) error
}

// addFetcher resolves ADD <url> sources the way BuildKit's http source
// does: a URL whose last download had an ETag is revalidated with a HEAD
// request (If-None-Match, Accept-Encoding: gzip) and reused when the ETag
// still matches; anything else is downloaded with a GET. Every request
// carries BuildKit's User-Agent.
type addFetcher struct {
	client  *http.Client
	tempDir string
	memo    addURLMemo // nil: always download
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

// addUserAgent is the User-Agent of BuildKit's http source at the
// version builder follows ("buildkit/v0.34"), naming builder as a product
// the way BuildKit's embedders add theirs.
func addUserAgent() string {
	v := "v0"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/moby/buildkit" {
				if parts := strings.SplitN(d.Version, ".", 3); len(parts) == 3 {
					v = parts[0] + "." + parts[1]
				}
			}
		}
	}
	return "buildkit/" + v + " builder"
}

func (f *addFetcher) newRequest(ctx context.Context, method, rawURL string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	req.Header.Set("User-Agent", addUserAgent())
	return req, nil
}

func (f *addFetcher) httpClient() *http.Client {
	if f.client == nil {
		return http.DefaultClient
	}
	return f.client
}

// resolve returns the download of rawURL, verified against the optional
// checksum ("sha256:<hex>", or sha384, sha512). With lazy, a revalidated
// URL is not downloaded (fetch does it when needed). A non-200 status, a
// broken body or a redirect loop is an error and leaves no file behind.
func (f *addFetcher) resolve(ctx context.Context, rawURL, checksum string, lazy bool) (*addDownload, error) {
	want, err := addParseChecksum(checksum)
	if err != nil {
		return nil, err
	}
	var rec addURLRecord
	known := false
	if f.memo != nil && checksum == "" {
		rec, known = f.memo.Get(ctx, rawURL)
		known = known && rec.ETag != "" && rec.Digest != ""
	}
	if known {
		ok, err := f.revalidate(ctx, rawURL, rec)
		if err != nil {
			return nil, err
		}
		if ok {
			return f.reused(ctx, rawURL, rec, lazy)
		}
	}
	req, err := f.newRequest(ctx, http.MethodGet, rawURL)
	if err != nil {
		return nil, err
	}
	if known {
		req.Header.Set("If-None-Match", rec.ETag)
	}
	resp, err := f.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	defer resp.Body.Close()
	if known && resp.StatusCode == http.StatusNotModified && addETagMatches(resp, rec.ETag) {
		return f.reused(ctx, rawURL, rec, lazy)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s: unexpected status %s", rawURL, resp.Status)
	}
	dl := newDownload(rawURL, resp.Header.Get("Last-Modified"))
	if err := f.save(dl, resp.Body, want); err != nil {
		return nil, err
	}
	if etag := resp.Header.Get("ETag"); etag != "" && f.memo != nil {
		rec := addURLRecord{ETag: strings.TrimPrefix(etag, "W/"), Digest: dl.digest, LastModified: resp.Header.Get("Last-Modified")}
		if err := f.memo.Put(ctx, rawURL, rec); err != nil {
			dl.remove()
			return nil, err
		}
	}
	return dl, nil
}

// revalidate asks with HEAD whether rawURL still has the ETag of rec. A
// failed request is no error: the GET that follows decides.
func (f *addFetcher) revalidate(ctx context.Context, rawURL string, rec addURLRecord) (bool, error) {
	req, err := f.newRequest(ctx, http.MethodHead, rawURL)
	if err != nil {
		return false, err
	}
	req.Header.Set("If-None-Match", rec.ETag)
	// Set by hand: the transport adds it to GETs only, and some servers
	// answer another ETag without it.
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := f.httpClient().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, nil
	}
	resp.Body.Close()
	ok := resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNotModified
	return ok && addETagMatches(resp, rec.ETag), nil
}

// addETagMatches reports whether resp names etag; a 304 without an ETag
// refers to the one asked about.
func addETagMatches(resp *http.Response, etag string) bool {
	got := strings.TrimPrefix(resp.Header.Get("ETag"), "W/")
	if got == "" && resp.StatusCode == http.StatusNotModified {
		return true
	}
	return got == etag
}

// reused is the download rec describes, fetched now unless lazy.
func (f *addFetcher) reused(ctx context.Context, rawURL string, rec addURLRecord, lazy bool) (*addDownload, error) {
	dl := newDownload(rawURL, rec.LastModified)
	dl.digest = rec.Digest
	if lazy {
		return dl, nil
	}
	if err := f.fetch(ctx, dl); err != nil {
		return nil, err
	}
	return dl, nil
}

// fetch downloads a revalidated dl whose content a step needs; content
// that no longer has the digest the step's key was made with is an error.
func (f *addFetcher) fetch(ctx context.Context, dl *addDownload) error {
	if dl.file != "" {
		return nil
	}
	req, err := f.newRequest(ctx, http.MethodGet, dl.url)
	if err != nil {
		return err
	}
	resp, err := f.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", dl.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: unexpected status %s", dl.url, resp.Status)
	}
	want := dl.digest
	if err := f.save(dl, resp.Body, ""); err != nil {
		return err
	}
	if dl.digest != want {
		dl.remove()
		err := sourceChanged(fmt.Errorf("fetch %s: content changed while its ETag did not (%s, was %s)", dl.url, dl.digest, want))
		if f.memo != nil {
			// Forget the ETag: the next build downloads the URL and keys
			// the step with what it gets.
			if perr := f.memo.Put(ctx, dl.url, addURLRecord{}); perr != nil {
				return errors.Join(err, perr)
			}
		}
		return err
	}
	return nil
}

// save writes body to a temp file, sets dl's file and digest and checks
// the optional checksum want.
func (f *addFetcher) save(dl *addDownload, body io.Reader, want digest.Digest) (err error) {
	out, err := os.CreateTemp(f.tempDir, "add-url-*")
	if err != nil {
		return fmt.Errorf("fetch %s: %w", dl.url, err)
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(out.Name())
		}
	}()
	h := sha256.New()
	w := io.MultiWriter(out, h)
	var wantHash = h
	if want != "" && want.Algorithm() != digest.SHA256 {
		wantHash = want.Algorithm().Hash()
		w = io.MultiWriter(w, wantHash)
	}
	if _, err = io.Copy(w, body); err != nil {
		return fmt.Errorf("fetch %s: read body: %w", dl.url, err)
	}
	if err = out.Close(); err != nil {
		return fmt.Errorf("fetch %s: %w", dl.url, err)
	}
	if want != "" {
		if got := digest.NewDigest(want.Algorithm(), wantHash); got != want {
			err = fmt.Errorf("digest mismatch for %s: %s (expected: %s)", dl.url, got, want)
			return err
		}
	}
	dl.file, dl.digest = out.Name(), "sha256:"+hex.EncodeToString(h.Sum(nil))
	return nil
}

// remove deletes the downloaded file, if any.
func (dl *addDownload) remove() {
	if dl.file != "" {
		os.Remove(dl.file)
		dl.file = ""
	}
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

// newDownload is the download of rawURL whose server said lastModified.
func newDownload(rawURL, lastModified string) *addDownload {
	_, err := http.ParseTime(lastModified)
	return &addDownload{url: rawURL, name: addFileName(rawURL), modTime: addLastModified(lastModified), lastModified: err == nil}
}

// addLastModified is the mtime BuildKit gives a download: its
// Last-Modified, else the Unix epoch (so the key of an ADD <url> without
// one is stable).
func addLastModified(v string) time.Time {
	if t, err := http.ParseTime(v); err == nil {
		return t
	}
	return time.Unix(0, 0).UTC()
}
