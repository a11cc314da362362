package exporter

import (
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/cache"
)

// fakeEngine serves the engine API calls builder makes on a unix socket.
func fakeEngine(t *testing.T, h http.HandlerFunc) *Engine {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	e, err := NewEngine("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestEngineCalls(t *testing.T) {
	var loaded string
	e := fakeEngine(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/_ping":
			io.WriteString(w, "OK")
		case r.Method == http.MethodPost && r.URL.Path == "/images/load":
			b, _ := io.ReadAll(r.Body)
			loaded = string(b)
			if r.Header.Get("Content-Type") != "application/x-tar" {
				http.Error(w, `{"message":"bad content type"}`, http.StatusBadRequest)
				return
			}
			io.WriteString(w, `{"stream":"Loaded image: app:v1\n"}`+"\n")
		case r.URL.Path == "/images/app:v1/json":
			io.WriteString(w, `{"Id":"sha256:abc"}`)
		case r.URL.Path == "/images/get" && r.URL.Query().Get("names") == "app:v1":
			io.WriteString(w, "TAR")
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"No such image: `+r.URL.Path+`"}`)
		}
	})
	ctx := t.Context()
	if err := e.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	lines, err := e.Load(ctx, strings.NewReader("archive bytes"))
	if err != nil || len(lines) != 1 || lines[0] != "Loaded image: app:v1" || loaded != "archive bytes" {
		t.Errorf("Load = %q, %v (engine got %q)", lines, err, loaded)
	}
	if id, err := e.ImageID(ctx, "app:v1"); err != nil || id != "sha256:abc" {
		t.Errorf("ImageID = %q, %v", id, err)
	}
	_, err = e.ImageID(ctx, "missing:1")
	if !errors.Is(err, cache.ErrNotFound) || !strings.Contains(err.Error(), "No such image") {
		t.Errorf("ImageID of a missing image: %v; want ErrNotFound with the engine's message", err)
	}
	rc, err := e.Save(ctx, "app:v1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "TAR" {
		t.Errorf("Save read %q", b)
	}
}

// An error in the engine's answer to a load is the load's error.
func TestEngineLoadError(t *testing.T) {
	e := fakeEngine(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"stream":"Loading layer\n"}`+"\n"+`{"errorDetail":{"message":"invalid tar header"},"error":"invalid tar header"}`+"\n")
	})
	lines, err := e.Load(t.Context(), strings.NewReader("x"))
	if err == nil || !strings.Contains(err.Error(), "invalid tar header") || len(lines) != 1 {
		t.Errorf("Load = %q, %v; want the engine's error after its first line", lines, err)
	}
}

func TestNewEngineHosts(t *testing.T) {
	t.Setenv("DOCKER_HOST", "")
	e, err := NewEngine("")
	if err != nil || e.Host() != DefaultDockerHost {
		t.Errorf("default: %v, %v", e, err)
	}
	t.Setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
	if e, err := NewEngine(""); err != nil || e.base != "http://127.0.0.1:2375" {
		t.Errorf("DOCKER_HOST tcp: %+v, %v", e, err)
	}
	if _, err := NewEngine("ssh://host"); err == nil || !strings.Contains(err.Error(), "only unix:// and tcp://") {
		t.Errorf("ssh host: %v", err)
	}
}
