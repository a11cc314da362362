package exporter

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// entry is a layer tar entry for the flatten tests: a name ending in /
// is a directory, link a hardlink target.
type entry struct{ name, body, link string }

func flatLayer(t *testing.T, entries ...entry) v1.Layer {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Unix(1600000000, 0)}
		switch {
		case strings.HasSuffix(e.name, "/"):
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case e.link != "":
			h.Typeflag, h.Linkname = tar.TypeLink, e.link
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// tarLines describes each entry of the tar r with line (given the entry's
// content), sorted.
func tarLines(t *testing.T, r io.Reader, line func(h *tar.Header, body []byte) string) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, line(h, body))
	}
	slices.Sort(out)
	return out
}

// TestFlatten: the flattened tar has the files an unpack of the layers
// has (WriteLocal), each path once: whiteouts and opaque directories
// applied, and a hardlink whose target an upper layer replaced or removed
// keeps its own layer's content (mutate.Extract made it a link to the
// upper layer's file), its other names linked to it.
func TestFlatten(t *testing.T) {
	img, err := mutate.AppendLayers(empty.Image,
		flatLayer(t, entry{name: "x/"}, entry{name: "x/a", body: "old"}, entry{name: "x/b", link: "x/a"}, entry{name: "x/c", link: "x/a"},
			entry{name: "x/d", body: "d"}, entry{name: "x/e", link: "x/d"}, entry{name: "o/"}, entry{name: "o/lower", body: "l"},
			entry{name: "w/"}, entry{name: "w/f", body: "f"}, entry{name: "w/g", link: "w/f"}),
		flatLayer(t, entry{name: "x/"}, entry{name: "x/a", body: "new"}, entry{name: "o/"}, entry{name: "o/.wh..wh..opq"},
			entry{name: "o/upper", body: "u"}, entry{name: ".wh.w"}, entry{name: "w/", body: ""}),
	)
	if err != nil {
		t.Fatal(err)
	}
	rc := Flatten(img)
	defer rc.Close()
	got := tarLines(t, rc, func(h *tar.Header, body []byte) string {
		return h.Name + " " + string(h.Typeflag) + " " + string(body) + h.Linkname
	})
	want := []string{"o/ 5 ", "o/upper 0 u", "w/ 5 ", "x/ 5 ", "x/a 0 new", "x/b 0 old", "x/c 1 x/b", "x/d 0 d", "x/e 1 x/d"}
	if !slices.Equal(got, want) {
		t.Errorf("flattened %q, want %q", got, want)
	}

	// The same files as the unpacked layers.
	dir := t.TempDir()
	if err := WriteLocal(t.Context(), dir, img); err != nil {
		t.Fatal(err)
	}
	for path, content := range map[string]string{"x/a": "new", "x/b": "old", "x/c": "old", "o/upper": "u"} {
		if b, err := os.ReadFile(filepath.Join(dir, path)); err != nil || string(b) != content {
			t.Errorf("unpacked %s: %q, %v; want %q", path, b, err, content)
		}
	}
	for _, gone := range []string{"o/lower", "w/f", "w/g"} {
		if _, err := os.Lstat(filepath.Join(dir, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("unpacked %s: %v, want it gone", gone, err)
		}
	}
}

// TestFlattenUnsafeName: an entry that climbs out of the root fails the
// flatten.
func TestFlattenUnsafeName(t *testing.T) {
	img, err := mutate.AppendLayers(empty.Image, flatLayer(t, entry{name: "../evil", body: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	rc := Flatten(img)
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); err == nil || !strings.Contains(err.Error(), "climbs out") {
		t.Errorf("flatten of ../evil: %v", err)
	}
}

// TestWriteLocalOutput: a local output is owned by the caller, its
// destination made 0700 and a platform's directory in it 0755, as
// BuildKit's client receives one; modes are the image's.
func TestWriteLocalOutput(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 5, Gid: 6},
		{Name: "d/s", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 7, Gid: 8},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	img := imageOfLayer(t, buf.Bytes())
	dest := filepath.Join(t.TempDir(), "out", "here")
	if err := WriteLocalOutput(t.Context(), dest, "linux_amd64", img); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{
		dest: 0o700 | os.ModeDir, filepath.Dir(dest): 0o700 | os.ModeDir, filepath.Join(dest, "linux_amd64"): 0o755 | os.ModeDir,
		filepath.Join(dest, "linux_amd64/d"): 0o750 | os.ModeDir, filepath.Join(dest, "linux_amd64/d/s"): 0o755 | os.ModeSetuid,
	} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != mode || int(st.Uid) != os.Getuid() || int(st.Gid) != os.Getgid() {
			t.Errorf("%s: %v %d:%d, want %v owned by the caller (%d:%d)", p, fi.Mode(), st.Uid, st.Gid, mode, os.Getuid(), os.Getgid())
		}
	}
}
