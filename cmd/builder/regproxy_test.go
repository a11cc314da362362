package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// regRequest is one request a registry proxy saw.
type regRequest struct {
	Method, Path, Query string
	Status              int
	Bytes               int64 // body bytes received (uploads) or sent (blob downloads)
}

// regProxy is a reverse proxy in front of a registry that records every
// request, to count blob uploads, mounts and downloads.
type regProxy struct {
	Addr string
	mu   sync.Mutex
	reqs []regRequest
}

var blobPath = regexp.MustCompile(`^/v2/.+/blobs/(sha256:[0-9a-f]{64})$`)

// startRegProxy serves a counting proxy to the registry at upstream
// ("127.0.0.1:PORT") on another loopback port until the test ends.
func startRegProxy(t testing.TB, upstream string) *regProxy {
	t.Helper()
	p := &regProxy{}
	target, err := url.Parse("http://" + upstream)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Addr = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingResponse{ResponseWriter: w, status: http.StatusOK}
		body := &proxyCountingBody{ReadCloser: r.Body}
		r.Body = body
		rp.ServeHTTP(cw, r)
		rec := regRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Status: cw.status, Bytes: body.n}
		if r.Method == http.MethodGet && blobPath.MatchString(r.URL.Path) {
			rec.Bytes = cw.n
		}
		p.mu.Lock()
		p.reqs = append(p.reqs, rec)
		p.mu.Unlock()
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return p
}

// reset forgets the requests seen so far.
func (p *regProxy) reset() {
	p.mu.Lock()
	p.reqs = nil
	p.mu.Unlock()
}

func (p *regProxy) requests() []regRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]regRequest(nil), p.reqs...)
}

// uploads lists the blob digests whose bytes were sent (the PUT that
// completes an upload names the digest).
func (p *regProxy) uploads() []string {
	var out []string
	for _, r := range p.requests() {
		if r.Method == http.MethodPut && strings.Contains(r.Path, "/blobs/uploads/") {
			q, _ := url.ParseQuery(r.Query)
			out = append(out, q.Get("digest"))
		}
	}
	return out
}

// mounts lists the blob digests the registry mounted from another
// repository (201 to a POST with mount=).
func (p *regProxy) mounts() []string {
	var out []string
	for _, r := range p.requests() {
		q, _ := url.ParseQuery(r.Query)
		if r.Method == http.MethodPost && q.Get("mount") != "" && r.Status == http.StatusCreated {
			out = append(out, q.Get("mount"))
		}
	}
	return out
}

// blobDownloads lists the blob digests fetched with GET and the bytes
// sent for them.
func (p *regProxy) blobDownloads() ([]string, int64) {
	var out []string
	var n int64
	for _, r := range p.requests() {
		if m := blobPath.FindStringSubmatch(r.Path); m != nil && r.Method == http.MethodGet {
			out = append(out, m[1])
			n += r.Bytes
		}
	}
	return out, n
}

type countingResponse struct {
	http.ResponseWriter
	status int
	n      int64
}

func (c *countingResponse) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingResponse) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingResponse) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

type proxyCountingBody struct {
	io.ReadCloser
	n int64
}

func (c *proxyCountingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}
