package exporter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testRegistry is an in-process registry that counts blob uploads.
type testRegistry struct {
	host    string // "127.0.0.1:PORT"
	uploads atomic.Int64
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.URL.Path, "/blobs/uploads/") && req.Method != http.MethodGet {
			r.uploads.Add(1)
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// countingTars is a tarWriter that counts re-serialisations.
type countingTars struct {
	*fakeLayers
	mu     sync.Mutex
	writes int
}

func (c *countingTars) WriteTar(ctx context.Context, diffID string, w io.Writer) (int64, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.fakeLayers.WriteTar(ctx, diffID, w)
}

func (c *countingTars) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// builtImage is an image of two uncompressed store layers served by tars.
func builtImage(t *testing.T, tars *countingTars) v1.Image {
	t.Helper()
	img := testImage(t, tars.fakeLayers, map[string]string{"a": "1"}, map[string]string{"b": strings.Repeat("xyz", 100000)})
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	counted := make([]v1.Layer, len(layers))
	for i, l := range layers {
		d, _ := l.DiffID()
		size, _ := l.Size()
		if counted[i], err = LayerFromStore(t.Context(), tars, d.String(), size); err != nil {
			t.Fatal(err)
		}
	}
	out, err := NewImageRaw(cfg, counted)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPushPullRoundTrip(t *testing.T) {
	reg := newTestRegistry(t)
	tars := &countingTars{fakeLayers: newFakeLayers()}
	img := builtImage(t, tars)
	src := newTestStore(t)
	var lines []string
	var mu sync.Mutex
	o := RemoteOptions{Progress: func(s string) { mu.Lock(); lines = append(lines, s); mu.Unlock() }}
	ref := reg.host + "/team/app:v1"

	pushed, err := src.PushImage(t.Context(), img, ref, o)
	if err != nil {
		t.Fatal(err)
	}
	if reg.uploads.Load() == 0 {
		t.Fatal("first push uploaded no blob")
	}
	if tars.count() != 2 {
		t.Errorf("first push serialised %d layer tars, want 2", tars.count())
	}
	if !strings.Contains(strings.Join(lines, "\n"), "compressing layer") {
		t.Errorf("no compression progress in %q", lines)
	}

	// The pushed manifest is OCI with gzip layers.
	r, _ := name.ParseReference(ref)
	desc, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != pushed.Digest || desc.Size != pushed.Size || desc.MediaType != pushed.MediaType {
		t.Errorf("registry has %+v, push returned %+v", desc.Descriptor, pushed)
	}
	remoteImg, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	m, _ := remoteImg.Manifest()
	for i, l := range m.Layers {
		if l.MediaType != types.OCILayer {
			t.Errorf("layer %d media type %s, want %s", i, l.MediaType, types.OCILayer)
		}
	}

	// A second push of the same layers: nothing compressed, nothing uploaded.
	before := reg.uploads.Load()
	again, err := src.PushImage(t.Context(), builtImage(t, tars), ref, o)
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != pushed.Digest {
		t.Errorf("second push gave %s, first %s", again.Digest, pushed.Digest)
	}
	if n := reg.uploads.Load() - before; n != 0 {
		t.Errorf("second push made %d blob upload requests, want 0", n)
	}
	if tars.count() != 2 {
		t.Errorf("second push serialised layer tars again (%d in all)", tars.count())
	}

	// Pull into a fresh store: same manifest, layers verified and unpacked.
	dst := newTestStore(t)
	got, err := dst.Pull(t.Context(), ref, RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got != pushed.Digest {
		t.Errorf("pulled %s, pushed %s", got, pushed.Digest)
	}
	local, err := dst.Image(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, local)
	if d := mustDigest(t, local); d != pushed.Digest {
		t.Errorf("local image %s, pushed %s", d, pushed.Digest)
	}
	cfg, _ := local.ConfigFile()
	for _, d := range cfg.RootFS.DiffIDs {
		if !dst.layers.Has(d.String()) {
			t.Errorf("layer %s not unpacked", d)
		}
	}

	// The pulled image's layers are compressed blobs: pushed as they are.
	before = reg.uploads.Load()
	copied, err := dst.Push(t.Context(), ref, reg.host+"/team/app:copy", RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if copied != pushed.Digest {
		t.Errorf("re-push of the pulled image gave %s, want %s", copied, pushed.Digest)
	}
	if n := reg.uploads.Load() - before; n != 0 {
		t.Errorf("re-push to the same registry made %d blob uploads, want 0 (mounts or existing)", n)
	}
}

// platformImage is a one-layer gzip image for os/arch.
func platformImage(t *testing.T, arch string) v1.Image {
	t.Helper()
	data := layerTar(t, map[string]string{"arch": arch})
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), l)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestPullIndexPicksPlatform(t *testing.T) {
	reg := newTestRegistry(t)
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	mine, theirs := platformImage(t, runtime.GOARCH), platformImage(t, other)
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: theirs, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: other}}},
		mutate.IndexAddendum{Add: mine, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	ref := reg.host + "/multi:latest"
	r, _ := name.ParseReference(ref)
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}

	st := newTestStore(t)
	got, err := st.Pull(t.Context(), ref, RemoteOptions{Platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH}})
	if err != nil {
		t.Fatal(err)
	}
	if want := mustDigest(t, mine); got != want {
		t.Errorf("pulled %s, want the linux/%s image %s", got, runtime.GOARCH, want)
	}
	img, err := st.Image(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, img)

	_, err = newTestStore(t).Pull(t.Context(), ref, RemoteOptions{Platform: v1.Platform{OS: "linux", Architecture: "s390x"}})
	if err == nil || !strings.Contains(err.Error(), "s390x") || !strings.Contains(err.Error(), reg.host) {
		t.Errorf("pull for a platform the index lacks: %v", err)
	}
}

func TestPullMissingImage(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.host + "/nosuch/image:v1"
	_, err := newTestStore(t).Pull(t.Context(), ref, RemoteOptions{})
	if !errors.Is(err, ErrImageNotFound) {
		t.Fatalf("pull of a missing image: %v, want ErrImageNotFound", err)
	}
	if msg := err.Error(); !strings.Contains(msg, ref) || !strings.Contains(msg, "from "+reg.host) {
		t.Errorf("error %q does not name the reference and the registry", msg)
	}
}

func TestPushMissingLocalImage(t *testing.T) {
	_, err := newTestStore(t).Push(t.Context(), "nosuch:v1", "127.0.0.1:1/x:y", RemoteOptions{})
	if err == nil || !strings.Contains(err.Error(), "nosuch:v1") {
		t.Errorf("push of a missing local image: %v", err)
	}
}

func TestRemoteInsecure(t *testing.T) {
	o := RemoteOptions{Insecure: []string{"reg.example:5000", "plain.example", "http://other.example:8080/"}}
	for host, want := range map[string]bool{
		"localhost:5000":        true,
		"127.0.0.1:35000":       true,
		"[::1]:5000":            true,
		"reg.example:5000":      true,
		"reg.example:5001":      false,
		"plain.example:443":     true,
		"other.example:8080":    true,
		"10.0.0.1:5000":         false,
		"index.docker.io":       false,
		"localhost.example:500": false,
	} {
		if got := o.insecure(host); got != want {
			t.Errorf("insecure(%q) = %v, want %v", host, got, want)
		}
	}

	// go-containerregistry falls back to HTTP for private addresses; the
	// guard refuses it unless the registry is named insecure.
	req, _ := http.NewRequest(http.MethodGet, "http://10.0.0.1:5000/v2/", nil)
	_, err := RemoteOptions{}.transport("10.0.0.1:5000").RoundTrip(req)
	if err == nil || !strings.Contains(err.Error(), "--insecure-registry 10.0.0.1:5000") {
		t.Errorf("plain HTTP to a private address: %v", err)
	}
}
