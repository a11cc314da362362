package executor

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/testenv"
)

func TestAddURL(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	tarBody := copyTar(t)
	sum := sha256.Sum256([]byte("payload"))
	good := "sha256:" + hex.EncodeToString(sum[:])
	mux := http.NewServeMux()
	mux.HandleFunc("/files/app.txt", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Last-Modified", copyMtime.Format(http.TimeFormat))
		w.Write([]byte("payload"))
	})
	mux.HandleFunc("/files/pkg.tar", func(w http.ResponseWriter, r *http.Request) { w.Write(tarBody) })
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	mux.HandleFunc("/reset", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Write([]byte("partial"))
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	tests := []struct {
		name    string
		req     copyRequest
		want    map[string]copyWant
		wantErr string
	}{
		{name: "file into dir", req: copyRequest{Sources: []string{srv.URL + "/files/app.txt"}, Dest: "/dl/"},
			want: map[string]copyWant{"dl/app.txt": {typ: "file", mode: 0o600, content: "payload", mtime: true}}},
		{name: "file renamed", req: copyRequest{Sources: []string{srv.URL + "/files/app.txt?x=1"}, Dest: "/dl/renamed"},
			want: map[string]copyWant{"dl/renamed": {typ: "file", mode: 0o600, content: "payload"}}},
		{name: "tar not extracted", req: copyRequest{Sources: []string{srv.URL + "/files/pkg.tar"}, Dest: "/dl/"},
			want: map[string]copyWant{"dl/pkg.tar": {typ: "file", mode: 0o600, content: string(tarBody)}, "dl/pkg": {typ: "absent"}}},
		{name: "tar with --unpack=true", req: copyRequest{Sources: []string{srv.URL + "/files/pkg.tar"}, Dest: "/dl/", Unpack: ptrTo(true)},
			want: map[string]copyWant{"dl/pkg/bin": {typ: "file", content: "bin", uid: 5, gid: 6}, "dl/pkg.tar": {typ: "absent"}}},
		{name: "no file name", req: copyRequest{Sources: []string{srv.URL + "/"}, Dest: "/dl/"}, wantErr: "404"},
		{name: "checksum ok", req: copyRequest{Sources: []string{srv.URL + "/files/app.txt"}, Dest: "/c", Checksum: good},
			want: map[string]copyWant{"c": {typ: "file", content: "payload"}}},
		{name: "checksum mismatch", req: copyRequest{Sources: []string{srv.URL + "/files/app.txt"}, Dest: "/c", Checksum: "sha256:" + strings.Repeat("0", 64)},
			wantErr: "digest mismatch for "},
		{name: "checksum md5", req: copyRequest{Sources: []string{srv.URL + "/files/app.txt"}, Dest: "/c", Checksum: "md5:7e55db001d319a94b0b713529a756623"},
			wantErr: "unsupported digest algorithm"},
		{name: "checksum without algorithm", req: copyRequest{Sources: []string{srv.URL + "/files/app.txt"}, Dest: "/c", Checksum: strings.TrimPrefix(good, "sha256:")},
			wantErr: "invalid checksum digest format"},
		{name: "checksum sha512", req: copyRequest{Sources: []string{srv.URL + "/files/app.txt"}, Dest: "/c", Checksum: sha512Of("payload")},
			want: map[string]copyWant{"c": {typ: "file", content: "payload"}}},
		{name: "checksum sha512 mismatch", req: copyRequest{Sources: []string{srv.URL + "/files/app.txt"}, Dest: "/c", Checksum: sha512Of("other")},
			wantErr: "digest mismatch for "},
		{name: "checksum of a context file", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/c", Checksum: good},
			wantErr: "checksum requires HTTP(S) or Git sources"},
		{name: "404", req: copyRequest{Sources: []string{srv.URL + "/missing"}, Dest: "/"}, wantErr: "unexpected status 404"},
		{name: "redirect loop", req: copyRequest{Sources: []string{srv.URL + "/loop"}, Dest: "/"}, wantErr: "stopped after 10 redirects"},
		{name: "reset mid-body", req: copyRequest{Sources: []string{srv.URL + "/reset"}, Dest: "/"}, wantErr: "read body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctxDir, rootfs, victim := copySetup(t)
			tmp := t.TempDir()
			tt.req.Add, tt.req.TempDir, tt.req.HTTPClient = true, tmp, srv.Client()
			err := copyRun(t, tt.req, ctxDir, rootfs)
			copyCheckResult(t, err, tt.wantErr, rootfs, victim, tt.want)
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Errorf("temp downloads left behind: %v", ents)
			}
		})
	}
}

func TestAddURLKeyInputs(t *testing.T) {
	t.Parallel()
	body := "v1"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(body)) }))
	t.Cleanup(srv.Close)
	fields := func() map[string]string {
		p, err := copyPrepare(t.Context(), copyRequest{Add: true, Sources: []string{srv.URL + "/f"}, Dest: "/", HTTPClient: srv.Client(), TempDir: t.TempDir()})
		copyCheck(t, err)
		defer p.Close()
		out := map[string]string{}
		for _, f := range p.Fields() {
			out[f.Name] = f.Value
		}
		return out
	}
	a := fields()
	body = "v2"
	b := fields()
	if a["source.0.url.digest"] == "" || a["source.0.url.digest"] == b["source.0.url.digest"] {
		t.Errorf("URL content digest not in key fields: %v vs %v", a, b)
	}
	if _, err := copyPrepare(t.Context(), copyRequest{Sources: []string{"a"}, Dest: "/", Checksum: "sha256:00"}); err == nil {
		t.Error("COPY --checksum: want error")
	}
}

func sha512Of(s string) string {
	sum := sha512.Sum512([]byte(s))
	return "sha512:" + hex.EncodeToString(sum[:])
}

func ptrTo[T any](v T) *T { return &v }

// mapURLMemo is an in-memory addURLMemo.
type mapURLMemo struct {
	mu   sync.Mutex
	recs map[string]addURLRecord
}

func (m *mapURLMemo) Get(_ context.Context, url string) (addURLRecord, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[url]
	return r, ok
}

func (m *mapURLMemo) Put(_ context.Context, url string, rec addURLRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.recs == nil {
		m.recs = map[string]addURLRecord{}
	}
	m.recs[url] = rec
	return nil
}

// TestAddURLRevalidates: as BuildKit's http source (testDockerfileADDFromURL),
// a URL whose download had an ETag is revalidated with a HEAD request
// (If-None-Match) next time and its content is fetched again only when the
// step runs; every request carries BuildKit's User-Agent; a download
// without Last-Modified gets the Unix epoch as mtime, so its key is stable.
func TestAddURLRevalidates(t *testing.T) {
	testenv.RequireRoot(t)
	var mu sync.Mutex
	var log []string
	body, etag := "content1", `"e1"`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		log = append(log, r.Method+" "+r.Header.Get("If-None-Match"))
		b, e := body, etag
		mu.Unlock()
		if !strings.HasPrefix(r.Header.Get("User-Agent"), "buildkit/v") {
			t.Errorf("User-Agent %q, want buildkit/v...", r.Header.Get("User-Agent"))
		}
		w.Header().Set("ETag", e)
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(b))
	}))
	t.Cleanup(srv.Close)
	memo := &mapURLMemo{}
	prepare := func() *copyPlan {
		t.Helper()
		p, err := copyPrepare(t.Context(), copyRequest{Add: true, Sources: []string{srv.URL + "/foo"}, Dest: "/dest/",
			HTTPClient: srv.Client(), TempDir: t.TempDir(), URLMemo: memo})
		copyCheck(t, err)
		t.Cleanup(func() { p.Close() })
		return p
	}
	takeLog := func(want ...string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if strings.Join(log, "|") != strings.Join(want, "|") {
			t.Errorf("requests %q, want %q", log, want)
		}
		log = nil
	}
	first := prepare()
	takeLog("GET ")
	if d := first.sources[0].url; d.modTime.Unix() != 0 || d.file == "" {
		t.Errorf("first download: mtime %v, file %q; want the epoch and a file", d.modTime, d.file)
	}
	second := prepare()
	takeLog(`HEAD "e1"`)
	if d := second.sources[0].url; d.file != "" || d.digest != first.sources[0].url.digest || !d.modTime.Equal(first.sources[0].url.modTime) {
		t.Errorf("revalidated download %+v, want no file and the first one's digest and mtime", d)
	}
	_, rootfs, _ := copySetup(t)
	copyCheck(t, second.Apply(t.Context(), rootfs))
	takeLog("GET ")
	copyVerify(t, rootfs, map[string]copyWant{"dest/foo": {typ: "file", content: "content1"}})

	// Same ETag, other content: the step's key no longer fits the content.
	mu.Lock()
	body = "content1-changed"
	mu.Unlock()
	third := prepare()
	takeLog(`HEAD "e1"`)
	_, rootfs, _ = copySetup(t)
	if err := third.Apply(t.Context(), rootfs); !errors.Is(err, ErrSourceChanged) || !strings.Contains(err.Error(), "content changed while its ETag did not") {
		t.Errorf("apply with changed content: %v", err)
	}
	takeLog("GET ")
	// The ETag is forgotten: the next build (the CLI's run again)
	// downloads the URL and keys the step with what it got.
	again := prepare()
	takeLog("GET ")
	if d := again.sources[0].url; d.file == "" || d.digest == first.sources[0].url.digest {
		t.Errorf("download after the changed content %+v, want a new download", d)
	}

	// A new ETag: downloaded again.
	mu.Lock()
	body, etag = "content2", `"e2"`
	mu.Unlock()
	fourth := prepare()
	takeLog(`HEAD "e1"`, `GET "e1"`)
	if d := fourth.sources[0].url; d.file == "" || d.digest == first.sources[0].url.digest {
		t.Errorf("changed URL %+v, want a new download", d)
	}
	if r, _ := memo.Get(t.Context(), srv.URL+"/foo"); r.ETag != `"e2"` || r.Digest != fourth.sources[0].url.digest {
		t.Errorf("memo %+v after the new download", r)
	}

	// ADD --unpack=true needs the content at once to tell an archive.
	p, err := copyPrepare(t.Context(), copyRequest{Add: true, Sources: []string{srv.URL + "/foo"}, Dest: "/dest/", Unpack: ptrTo(true),
		HTTPClient: srv.Client(), TempDir: t.TempDir(), URLMemo: memo})
	copyCheck(t, err)
	defer p.Close()
	takeLog(`HEAD "e2"`, "GET ")
	if d := p.sources[0].url; d.file == "" || d.digest != fourth.sources[0].url.digest {
		t.Errorf("revalidated download for --unpack %+v, want it fetched", d)
	}
}
