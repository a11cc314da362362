package exporter

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// windowsLayerTar is a layer in the Windows layer format: files below
// Files/, hives beside them, Windows attributes on each entry.
func windowsLayerTar(t *testing.T) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	rec := func(attr string) map[string]string {
		return map[string]string{"MSWINDOWS.fileattr": attr, "MSWINDOWS.rawsd": "AQAE", "LIBARCHIVE.creationtime": "1600000000.0"}
	}
	mtime := time.Unix(1600000000, 0)
	for _, h := range []*tar.Header{
		{Name: "Hives", Typeflag: tar.TypeDir, Mode: 0o40000, ModTime: mtime, PAXRecords: rec("16")},
		{Name: "Hives/SOFTWARE", Typeflag: tar.TypeReg, Mode: 0o100644, Size: 4, ModTime: mtime, PAXRecords: rec("32")},
		{Name: "Files", Typeflag: tar.TypeDir, Mode: 0o40000, ModTime: mtime, PAXRecords: rec("16")},
		{Name: "Files/Windows/", Typeflag: tar.TypeDir, Mode: 0o40755, ModTime: mtime, PAXRecords: rec("16")},
		{Name: "Files/Windows/win.ini", Typeflag: tar.TypeReg, Mode: 0o100644, Size: 4, ModTime: mtime, PAXRecords: rec("32")},
		{Name: "Files/Windows/hard.ini", Typeflag: tar.TypeLink, Mode: 0o644, Linkname: "Files/Windows/win.ini", ModTime: mtime},
		{Name: "Files/.wh.gone", Typeflag: tar.TypeReg, Mode: 0o100000, ModTime: time.Unix(0, 0), PAXRecords: rec("32")},
		{Name: "UtilityVM/Files/vm.sys", Typeflag: tar.TypeReg, Mode: 0o100644, Size: 4, ModTime: mtime, PAXRecords: rec("32")},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(bytes.Repeat([]byte("x"), int(h.Size))); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func imageOfLayer(t *testing.T, data []byte) v1.Image {
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestWindowsFiles: a Windows layer's files are its Files/ entries, at
// the root, without the Windows attributes (BuildKit's local and tar
// outputs of such an image); the hives, the utility VM and the Files
// directory itself are not files of the image.
func TestWindowsFiles(t *testing.T) {
	img := WindowsFiles(imageOfLayer(t, windowsLayerTar(t)), []bool{true})
	rc := Flatten(img)
	defer rc.Close()
	got := tarLines(t, rc, func(h *tar.Header, _ []byte) string {
		for k := range h.PAXRecords {
			if strings.HasPrefix(k, "MSWINDOWS.") || strings.HasPrefix(k, "LIBARCHIVE.") {
				t.Errorf("%s keeps the record %s", h.Name, k)
			}
		}
		return h.Name + " " + string(h.Typeflag) + " " + strings.TrimPrefix(h.FileInfo().Mode().String(), "-") + " " + h.Linkname
	})
	want := []string{"Windows/ 5 drwxr-xr-x ", "Windows/hard.ini 1 rw-r--r-- Windows/win.ini", "Windows/win.ini 0 rw-r--r-- "}
	if !slices.Equal(got, want) {
		t.Errorf("files %q, want %q", got, want)
	}

	dir := t.TempDir()
	if err := WriteLocal(t.Context(), dir, img); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 || entries[0].Name() != "Windows" {
		t.Errorf("local output holds %v (%v), want Windows alone", entries, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "Windows", "hard.ini")); err != nil || string(b) != "xxxx" {
		t.Errorf("Windows/hard.ini: %q, %v", b, err)
	}
}

// TestWindowsFilesDamaged: a layer whose content is not its diffID's
// fails the files read from it.
func TestWindowsFilesDamaged(t *testing.T) {
	data := windowsLayerTar(t)
	good := imageOfLayer(t, data)
	damaged := bytes.Clone(data)
	i := bytes.Index(damaged, []byte("xxxx"))
	damaged[i] = 'y'
	bad := &diffIDImage{Image: imageOfLayer(t, damaged), of: good}
	if err := WriteLocal(t.Context(), t.TempDir(), WindowsFiles(bad, []bool{true})); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("WriteLocal of a damaged layer: %v, want a digest error", err)
	}
}

// diffIDImage is an image whose layers claim the diffIDs of another's.
type diffIDImage struct {
	v1.Image
	of v1.Image
}

func (d *diffIDImage) Layers() ([]v1.Layer, error) {
	ls, err := d.Image.Layers()
	if err != nil {
		return nil, err
	}
	want, err := d.of.Layers()
	if err != nil {
		return nil, err
	}
	for i := range ls {
		ls[i] = &claimedLayer{Layer: ls[i], claim: want[i]}
	}
	return ls, nil
}

type claimedLayer struct {
	v1.Layer
	claim v1.Layer
}

func (c *claimedLayer) DiffID() (v1.Hash, error) { return c.claim.DiffID() }
