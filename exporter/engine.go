package exporter

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/builder-dev/builder/cache"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Engine is a Docker Engine reached through its API, as `docker` reaches
// it: $DOCKER_HOST (unix:///PATH or tcp://HOST:PORT, plain HTTP) or the
// default socket /var/run/docker.sock. builder needs three of its calls —
// load an image archive, save images to one, and inspect an image — so it
// makes them itself instead of linking the engine's client module.
type Engine struct {
	host   string // as the user named it, for errors
	base   string // URL prefix of API calls
	client *http.Client
}

// DefaultDockerHost is the engine's socket when $DOCKER_HOST is unset.
const DefaultDockerHost = "unix:///var/run/docker.sock"

// NewEngine returns the engine at host ("" means $DOCKER_HOST, else the
// default socket). It does not contact it.
func NewEngine(host string) (*Engine, error) {
	if host == "" {
		host = os.Getenv("DOCKER_HOST")
	}
	if host == "" {
		host = DefaultDockerHost
	}
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("docker host %q: %w", host, err)
	}
	tr := &http.Transport{ResponseHeaderTimeout: 0}
	e := &Engine{host: host, client: &http.Client{Transport: tr}}
	switch u.Scheme {
	case "unix":
		sock := u.Path
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
		e.base = "http://docker"
	case "tcp", "http":
		e.base = "http://" + u.Host
	default:
		return nil, fmt.Errorf("docker host %q: only unix:// and tcp:// are supported", host)
	}
	return e, nil
}

// Host is the engine's address as given.
func (e *Engine) Host() string { return e.host }

// Ping reports whether the engine answers.
func (e *Engine) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := e.do(ctx, http.MethodGet, "/_ping", nil, "")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Load streams a docker-save archive into the engine (POST /images/load)
// and returns what the engine reported, such as "Loaded image: app:v1".
func (e *Engine) Load(ctx context.Context, archive io.Reader) ([]string, error) {
	resp, err := e.do(ctx, http.MethodPost, "/images/load?quiet=1", archive, "application/x-tar")
	if err != nil {
		return nil, fmt.Errorf("load into docker engine %s: %w", e.host, err)
	}
	defer resp.Body.Close()
	lines, err := readJSONMessages(resp.Body)
	if err != nil {
		return lines, fmt.Errorf("load into docker engine %s: %w", e.host, err)
	}
	return lines, nil
}

// ImageID returns the ID the engine shows for ref (GET /images/REF/json),
// or an error wrapping cache.ErrNotFound when it has no such image.
func (e *Engine) ImageID(ctx context.Context, ref string) (string, error) {
	resp, err := e.do(ctx, http.MethodGet, "/images/"+url.PathEscape(ref)+"/json", nil, "")
	if err != nil {
		return "", fmt.Errorf("docker engine %s: inspect %s: %w", e.host, ref, err)
	}
	defer resp.Body.Close()
	var v struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.ID == "" {
		return "", fmt.Errorf("docker engine %s: inspect %s: unexpected answer (%v)", e.host, ref, err)
	}
	return v.ID, nil
}

// Save returns the docker-save archive of ref from the engine
// (GET /images/get), or an error wrapping cache.ErrNotFound.
func (e *Engine) Save(ctx context.Context, ref string) (io.ReadCloser, error) {
	resp, err := e.do(ctx, http.MethodGet, "/images/get?names="+url.QueryEscape(ref), nil, "")
	if err != nil {
		return nil, fmt.Errorf("docker engine %s: save %s: %w", e.host, ref, err)
	}
	return resp.Body, nil
}

// do makes one API call; a non-2xx answer is an error with the engine's
// message (404 wraps cache.ErrNotFound).
func (e *Engine) do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	msg := engineMessage(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("%s: %w", msg, cache.ErrNotFound)
	}
	return nil, fmt.Errorf("%s %s: %s (HTTP %d)", method, path, msg, resp.StatusCode)
}

// engineMessage reads the engine's error body: {"message": "..."}.
func engineMessage(r io.Reader) string {
	data, _ := io.ReadAll(io.LimitReader(r, 64<<10))
	var v struct{ Message string }
	if json.Unmarshal(data, &v) == nil && v.Message != "" {
		return v.Message
	}
	return strings.TrimSpace(string(data))
}

// readJSONMessages reads the engine's stream of JSON messages
// ({"stream": "..."}, {"error": "...", "errorDetail": {...}}) and returns
// the text lines; an error message ends it with an error.
func readJSONMessages(r io.Reader) ([]string, error) {
	var lines []string
	dec := json.NewDecoder(bufio.NewReader(r))
	for {
		var m struct {
			Stream      string
			Status      string
			Error       string
			ErrorDetail struct{ Message string }
		}
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return lines, nil
		}
		if err != nil {
			return lines, fmt.Errorf("read the engine's answer: %w", err)
		}
		if m.Error != "" || m.ErrorDetail.Message != "" {
			return lines, errors.New(firstNonEmpty(m.ErrorDetail.Message, m.Error))
		}
		for _, l := range strings.Split(firstNonEmpty(m.Stream, m.Status), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, l)
			}
		}
	}
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// FromEngine copies ref from the engine into the store, as `builder load`
// of its `docker save` would, without tagging it, and returns the stored
// image's manifest digest; an error wrapping cache.ErrNotFound when the
// engine has no such image.
func (s *Store) FromEngine(ctx context.Context, e *Engine, ref string) (v1.Hash, error) {
	rc, err := e.Save(ctx, ref)
	if err != nil {
		return v1.Hash{}, err
	}
	defer rc.Close()
	dir, err := s.blobs.ScratchDir()
	if err != nil {
		return v1.Hash{}, err
	}
	f, err := os.CreateTemp(dir, "engine-*.tar")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return v1.Hash{}, fmt.Errorf("docker engine %s: save %s: %w", e.host, ref, err)
	}
	images, err := ReadArchive(ctx, f.Name())
	if err != nil {
		return v1.Hash{}, fmt.Errorf("docker engine %s: save %s: %w", e.host, ref, err)
	}
	if len(images) != 1 {
		return v1.Hash{}, fmt.Errorf("docker engine %s: save %s: got %d images, want 1", e.host, ref, len(images))
	}
	return s.importImage(ctx, images[0].Image, nil, nil)
}
