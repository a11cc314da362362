package remotecontext

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

type entry struct {
	name, content string
	mtime         int64
	typ           byte
}

func makeTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.content)), ModTime: time.Unix(e.mtime, 0), Typeflag: e.typ}
		if e.typ == tar.TypeSymlink || e.typ == tar.TypeLink {
			h.Linkname, h.Size = e.content, 0
		}
		if e.typ == tar.TypeDir {
			h.Mode, h.Size = 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.content))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compressions(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{"plain": data}
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(data)
	w.Close()
	out["gzip"] = gz.Bytes()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	out["zstd"] = enc.EncodeAll(data, nil)
	for _, tool := range []string{"bzip2", "xz"} {
		if _, err := exec.LookPath(tool); err != nil {
			continue
		}
		cmd := exec.Command(tool, "-c")
		cmd.Stdin = bytes.NewReader(data)
		b, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		out[tool] = b
	}
	return out
}

// A context is an archive (in every compression) or, otherwise, a
// Dockerfile: told apart by content, never by name.
func TestSaveDetects(t *testing.T) {
	archive := makeTar(t, entry{name: "Dockerfile", content: "FROM scratch\n"}, entry{name: "foo", content: "x", mtime: 7})
	for name, data := range compressions(t, archive) {
		f, err := Save(bytes.NewReader(data), filepath.Join(t.TempDir(), "ctx"))
		if err != nil || !f.Archive {
			t.Errorf("%s tar: archive=%v, %v", name, f != nil && f.Archive, err)
			continue
		}
		dest := t.TempDir()
		if err := Extract(context.Background(), f, dest); err != nil {
			t.Errorf("%s: extract: %v", name, err)
			continue
		}
		if b, _ := os.ReadFile(filepath.Join(dest, "Dockerfile")); string(b) != "FROM scratch\n" {
			t.Errorf("%s: Dockerfile = %q", name, b)
		}
	}
	for name, data := range map[string]string{
		"dockerfile": "FROM busybox\nRUN echo hi\n",
		"empty":      "",
		"gzip text":  string(compressions(t, []byte("FROM scratch\n"))["gzip"]),
	} {
		p := filepath.Join(t.TempDir(), "ctx")
		f, err := Save(strings.NewReader(data), p)
		if err != nil || f.Archive {
			t.Errorf("%s: archive=%v, %v; want a plain file", name, f != nil && f.Archive, err)
			continue
		}
		if b, _ := os.ReadFile(p); string(b) != data {
			t.Errorf("%s: saved %q", name, b)
		}
	}
}

// An archive cannot write outside the context directory.
func TestExtractStaysInside(t *testing.T) {
	for name, entries := range map[string][]entry{
		"dotdot":         {{name: "../evil", content: "x"}},
		"symlink escape": {{name: "link", content: "/", typ: tar.TypeSymlink}, {name: "link/evil", content: "x"}},
	} {
		dir := t.TempDir()
		dest := filepath.Join(dir, "ctx")
		os.Mkdir(dest, 0o755)
		p := filepath.Join(dir, "a.tar")
		os.WriteFile(p, makeTar(t, entries...), 0o600)
		err := Extract(context.Background(), &File{Path: p, Archive: true}, dest)
		if _, serr := os.Lstat(filepath.Join(dir, "evil")); serr == nil {
			t.Errorf("%s: wrote outside the context (err %v)", name, err)
		}
		if _, serr := os.Lstat("/evil"); serr == nil {
			t.Fatalf("%s: wrote /evil", name)
		}
	}
}

func TestEpoch(t *testing.T) {
	lm := time.Date(2023, 11, 14, 22, 15, 1, 0, time.UTC)
	archive := makeTar(t, entry{name: "a", content: "1", mtime: 1700000100}, entry{name: "b", content: "2", mtime: 1700000302},
		entry{name: "d/", typ: tar.TypeDir, mtime: 1800000000}, entry{name: "l", content: "a", typ: tar.TypeSymlink, mtime: 1900000000})
	mux := http.NewServeMux()
	mux.HandleFunc("/lm.tar", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Last-Modified", lm.Format(http.TimeFormat))
		w.Write(archive)
	})
	mux.HandleFunc("/plain.tar.gz", func(w http.ResponseWriter, r *http.Request) { w.Write(compressions(t, archive)["gzip"]) })
	mux.HandleFunc("/Dockerfile", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("FROM scratch\n")) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for path, want := range map[string]*time.Time{
		"/lm.tar":       &lm,
		"/plain.tar.gz": ptr(time.Unix(1700000302, 0).UTC()), // the newest regular file
		"/Dockerfile":   nil,
	} {
		f, err := Download(context.Background(), srv.Client(), srv.URL+path, t.TempDir(), "context")
		if err != nil {
			t.Fatal(err)
		}
		got, err := Epoch(f)
		if err != nil {
			t.Fatal(err)
		}
		if (got == nil) != (want == nil) || (got != nil && !got.Equal(*want)) {
			t.Errorf("%s: epoch %v, want %v", path, got, want)
		}
	}
	if _, err := Download(context.Background(), srv.Client(), srv.URL+"/missing", t.TempDir(), "context"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("404: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
