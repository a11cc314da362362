package exporter

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/builder-dev/builder/internal/testenv"
)

func twoImages(t *testing.T) []Tagged {
	ls := newFakeLayers()
	shared := map[string]string{"bin/sh": "shell"}
	a := testImage(t, ls, shared, map[string]string{"app": "v1"})
	b := testImage(t, ls, shared, map[string]string{"app": "v2"})
	return []Tagged{{Image: a, Tags: []string{"app:v1", "app:latest"}}, {Image: b, Tags: []string{"localhost:5000/team/app:v2"}}}
}

func TestWriteDockerFormat(t *testing.T) {
	images := twoImages(t)
	path := filepath.Join(t.TempDir(), "out.tar")
	if err := WriteDocker(t.Context(), path, images); err != nil {
		t.Fatal(err)
	}
	ix, err := indexTar(path)
	if err != nil {
		t.Fatal(err)
	}
	var m []dockerManifestEntry
	if err := readJSON(ix, "manifest.json", &m); err != nil {
		t.Fatal(err)
	}
	if got := [][]string{m[0].RepoTags, m[1].RepoTags}; !cmp.Equal(got, [][]string{{"app:v1", "app:latest"}, {"localhost:5000/team/app:v2"}}) {
		t.Errorf("RepoTags = %v", got)
	}
	if m[0].Layers[0] != m[1].Layers[0] {
		t.Errorf("shared layer named twice: %v %v", m[0].Layers, m[1].Layers)
	}
	var idx v1.IndexManifest
	if err := readJSON(ix, "index.json", &idx); err != nil {
		t.Fatal(err)
	}
	wantAnn := []map[string]string{
		{annotationImageName: "docker.io/library/app:v1", annotationRefName: "v1"},
		{annotationImageName: "docker.io/library/app:latest", annotationRefName: "latest"},
		{annotationImageName: "localhost:5000/team/app:v2", annotationRefName: "v2"},
	}
	var gotAnn []map[string]string
	for _, d := range idx.Manifests {
		gotAnn = append(gotAnn, d.Annotations)
	}
	if diff := cmp.Diff(wantAnn, gotAnn); diff != "" {
		t.Errorf("index annotations (-want +got):\n%s", diff)
	}
	for _, f := range []string{"oci-layout", "repositories"} {
		if !ix.has(f) {
			t.Errorf("%s missing", f)
		}
	}
	blobs := 0
	for n := range ix.entries {
		if filepath.Dir(n) == "blobs/sha256" {
			blobs++
		}
	}
	if blobs != 7 { // 2 manifests, 2 configs, 3 distinct layers
		t.Errorf("%d blobs, want 7", blobs)
	}
	// GGCR reads it back through manifest.json; validate.Image is the full check.
	for i, tag := range []string{"app:v1", "localhost:5000/team/app:v2"} {
		ref, err := name.NewTag(tag)
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(path, &ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(img); err != nil {
			t.Errorf("validate %s: %v", tag, err)
		}
		wantCfg, _ := images[i].Image.ConfigName()
		if gotCfg, _ := img.ConfigName(); gotCfg != wantCfg {
			t.Errorf("%s config %s, want %s", tag, gotCfg, wantCfg)
		}
	}
}

func TestWriteDeterministic(t *testing.T) {
	for name, write := range archiveWriters {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
			if err := write(t.Context(), a, twoImages(t)); err != nil {
				t.Fatal(err)
			}
			if err := write(t.Context(), b, twoImages(t)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(mustRead(t, a), mustRead(t, b)) {
				t.Error("two writes of the same images differ")
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 2 {
				t.Errorf("leftover files: %v", entries)
			}
		})
	}
}

func TestWriteOCILayout(t *testing.T) {
	images := twoImages(t)
	path := filepath.Join(t.TempDir(), "oci.tar")
	if err := WriteOCI(t.Context(), path, images, Compression{}); err != nil {
		t.Fatal(err)
	}
	// Unpack into a directory for GGCR's layout reader.
	dir := t.TempDir()
	ix, err := indexTar(path)
	if err != nil {
		t.Fatal(err)
	}
	for n := range ix.entries {
		data, err := ix.readAll(n, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(n)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 3 || im.Manifests[0].Annotations[annotationRefName] != "v1" {
		t.Fatalf("index = %+v", im.Manifests)
	}
	for _, d := range im.Manifests {
		img, err := p.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(img); err != nil {
			t.Errorf("validate %s: %v", d.Digest, err)
		}
	}
}

// TestWriteOCIBlobEntries: the layers an OCI archive compresses are
// written into it as they are compressed, their headers after them; read
// back as a plain tar, every entry appears once, the blob directories come
// first, and each blob's bytes have the digest its name says (a header
// written over the wrong block, or a layer written twice, fails it).
func TestWriteOCIBlobEntries(t *testing.T) {
	for _, c := range []Compression{{}, {Codec: Zstd}} {
		t.Run(c.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "oci.tar")
			if err := WriteOCI(t.Context(), path, twoImages(t), c); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			tr := tar.NewReader(f)
			var names []string
			for {
				hdr, err := tr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("after %v: %v", names, err)
				}
				names = append(names, hdr.Name)
				hex, ok := strings.CutPrefix(hdr.Name, "blobs/sha256/")
				if !ok || hex == "" {
					continue
				}
				h := sha256.New()
				if n, err := io.Copy(h, tr); err != nil || n != hdr.Size {
					t.Fatalf("%s: read %d of %d bytes: %v", hdr.Name, n, hdr.Size, err)
				}
				if got := fmt.Sprintf("%x", h.Sum(nil)); got != hex {
					t.Errorf("%s holds bytes of digest %s", hdr.Name, got)
				}
			}
			if len(names) < 2 || names[0] != "blobs/" || names[1] != "blobs/sha256/" {
				t.Errorf("entries start %v, want the blob directories", names)
			}
			seen := map[string]bool{}
			blobs := 0
			for _, n := range names {
				if seen[n] {
					t.Errorf("%s twice in %v", n, names)
				}
				seen[n] = true
				if strings.HasPrefix(n, "blobs/sha256/") && n != "blobs/sha256/" {
					blobs++
				}
			}
			if blobs != 7 { // 2 manifests, 2 configs, 3 distinct layers
				t.Errorf("%d blobs, want 7: %v", blobs, names)
			}
		})
	}
}

func TestWriteReplacesSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "out.tar")
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	if err := WriteDocker(t.Context(), path, twoImages(t)); err != nil {
		t.Fatal(err)
	}
	if got := string(mustRead(t, victim)); got != "keep" {
		t.Errorf("symlink target overwritten: %q", got)
	}
	if st, err := os.Lstat(path); err != nil || !st.Mode().IsRegular() {
		t.Errorf("dest is not a regular file: %v %v", st, err)
	}
}

func TestWriteCancelledKeepsOld(t *testing.T) {
	for name, write := range map[string]func(ctx context.Context, p string) error{
		"docker":   func(ctx context.Context, p string) error { return WriteDocker(ctx, p, twoImages(t)) },
		"oci-gzip": func(ctx context.Context, p string) error { return WriteOCI(ctx, p, twoImages(t), Compression{}) },
		"oci-zstd": func(ctx context.Context, p string) error {
			return WriteOCI(ctx, p, twoImages(t), Compression{Codec: Zstd})
		},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "out.tar")
			if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := contextWithCancel(t)
			cancel()
			if err := write(ctx, path); err == nil {
				t.Fatal("write with a cancelled context succeeded")
			}
			if got := string(mustRead(t, path)); got != "old" {
				t.Errorf("dest = %q, want old content", got)
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Errorf("temp files left: %v", entries)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	for name, write := range map[string]func(t *testing.T, p string, imgs []Tagged) error{
		"docker": func(t *testing.T, p string, imgs []Tagged) error { return WriteDocker(t.Context(), p, imgs) },
		"oci": func(t *testing.T, p string, imgs []Tagged) error {
			return WriteOCI(t.Context(), p, imgs, Compression{})
		},
	} {
		t.Run(name, func(t *testing.T) {
			images := twoImages(t)
			path := filepath.Join(t.TempDir(), "x.tar")
			if err := write(t, path, images); err != nil {
				t.Fatal(err)
			}
			got, err := ReadArchive(t.Context(), path)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 {
				t.Fatalf("%d images, want 2", len(got))
			}
			for i := range got {
				checkImage(t, got[i].Image)
				wantCfg, _ := images[i].Image.RawConfigFile()
				gotCfg, _ := got[i].Image.RawConfigFile()
				if !bytes.Equal(wantCfg, gotCfg) {
					t.Errorf("image %d config differs", i)
				}
				if name == "docker" && mustDigest(t, got[i].Image) != mustDigest(t, images[i].Image) {
					t.Errorf("image %d digest changed", i)
				}
			}
			wantTags := [][]string{{"docker.io/library/app:v1", "docker.io/library/app:latest"}, {"localhost:5000/team/app:v2"}}
			if diff := cmp.Diff(wantTags, [][]string{got[0].Tags, got[1].Tags}); diff != "" {
				t.Errorf("tags (-want +got):\n%s", diff)
			}
		})
	}
}

func jsonBytes(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHeaderAtLargeBlob: a blob header written over its reserved block
// fits it at any size — ustar below 8 GiB, GNU's binary size from there —
// and reads back with the size it was given.
func TestHeaderAtLargeBlob(t *testing.T) {
	for _, size := range []int64{0, 1<<33 - 1, 1 << 33, 9 << 30, 1 << 40} {
		f, err := os.Create(filepath.Join(t.TempDir(), "a.tar"))
		if err != nil {
			t.Fatal(err)
		}
		d := &detTar{ctx: t.Context(), out: newArchiveWriter(f)}
		if _, err := d.out.Write(zeroBlocks[:blockSize]); err != nil {
			t.Fatal(err)
		}
		name := "blobs/sha256/" + strings.Repeat("a", 64)
		if err := d.headerAt(0, regHeader(name, size)); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		hdr, err := tar.NewReader(f).Next()
		if err != nil {
			t.Fatalf("size %d: read header: %v", size, err)
		}
		if hdr.Name != name || hdr.Size != size {
			t.Errorf("header reads %s of %d bytes, want %s of %d", hdr.Name, hdr.Size, name, size)
		}
		if st, err := f.Stat(); err != nil || st.Size() != blockSize {
			t.Errorf("size %d: archive of %v bytes after the header, want one block (%v)", size, st.Size(), err)
		}
		f.Close()
	}
}

// TestArchiveCreatedAnnotation: an image with a creation time has it on
// each of its index.json entries, tagged or not, as BuildKit's oci and
// docker exporters write org.opencontainers.image.created; one without
// has none.
func TestArchiveCreatedAnnotation(t *testing.T) {
	created := time.Date(2024, 5, 6, 7, 8, 9, 500, time.FixedZone("x", 3600))
	for name, write := range archiveWriters {
		for _, tc := range []struct {
			name    string
			tags    []string
			created time.Time
			want    []map[string]string
		}{
			{"tagged", []string{"app:v1", "app:latest"}, created, []map[string]string{
				{annotationImageName: "docker.io/library/app:v1", annotationRefName: "v1", annotationCreated: "2024-05-06T06:08:09Z"},
				{annotationImageName: "docker.io/library/app:latest", annotationRefName: "latest", annotationCreated: "2024-05-06T06:08:09Z"},
			}},
			{"untagged", nil, created, []map[string]string{{annotationCreated: "2024-05-06T06:08:09Z"}}},
			{"no time", []string{"app:v1"}, time.Time{}, []map[string]string{
				{annotationImageName: "docker.io/library/app:v1", annotationRefName: "v1"},
			}},
			{"untagged, no time", nil, time.Time{}, []map[string]string{nil}},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				img := twoImages(t)[0].Image
				path := filepath.Join(t.TempDir(), "out.tar")
				if err := write(t.Context(), path, []Tagged{{Image: img, Tags: tc.tags, Created: tc.created}}); err != nil {
					t.Fatal(err)
				}
				idx := archiveIndexJSON(t, path)
				var got []map[string]string
				for _, d := range idx.Manifests {
					got = append(got, d.Annotations)
				}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("index.json annotations (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// TestArchivePlatform: a build's single image names its platform on each
// of its index.json entries, as BuildKit's oci and docker exporters write
// a single-platform build; one without a platform (builder save) has
// none, and neither has an index (an image with attestations).
func TestArchivePlatform(t *testing.T) {
	arm := &v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	for name, write := range archiveWriters {
		for _, tc := range []struct {
			name     string
			platform *v1.Platform
			attest   bool
			want     *v1.Platform
		}{
			{"build", arm, false, arm},
			{"save", nil, false, nil},
			{"attested", arm, true, nil},
		} {
			if tc.attest && name == "docker" {
				continue // a docker archive holds no attestations
			}
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				tagged := Tagged{Image: twoImages(t)[0].Image, Tags: []string{"app:v1", "app:v2"}, Platform: tc.platform}
				if tc.attest {
					tagged.Attest = testAttest(&v1.Descriptor{})
				}
				path := filepath.Join(t.TempDir(), "out.tar")
				if err := write(t.Context(), path, []Tagged{tagged}); err != nil {
					t.Fatal(err)
				}
				idx := archiveIndexJSON(t, path)
				if len(idx.Manifests) != 2 {
					t.Fatalf("%d index.json entries, want 2", len(idx.Manifests))
				}
				for _, d := range idx.Manifests {
					if diff := cmp.Diff(tc.want, d.Platform); diff != "" {
						t.Errorf("entry %s platform (-want +got):\n%s", d.Digest, diff)
					}
				}
			})
		}
	}
}

// archiveIndexJSON is the index.json of the archive at path.
func archiveIndexJSON(t *testing.T, path string) v1.IndexManifest {
	t.Helper()
	idx, _ := archiveIndex(t, path)
	return idx
}

// archiveIndex is the index.json of the archive at path, and the archive.
func archiveIndex(t *testing.T, path string) (v1.IndexManifest, *tarIndex) {
	t.Helper()
	ix, err := indexTar(path)
	if err != nil {
		t.Fatal(err)
	}
	var idx v1.IndexManifest
	if err := readJSON(ix, "index.json", &idx); err != nil {
		t.Fatal(err)
	}
	return idx, ix
}

// archiveWriters write a docker and an (uncompressed) OCI archive.
var archiveWriters = map[string]func(ctx context.Context, path string, images []Tagged) error{
	"docker": WriteDocker,
	"oci": func(ctx context.Context, p string, images []Tagged) error {
		return WriteOCI(ctx, p, images, Compression{})
	},
}

// TestWriteArchiveSpecialFiles: an archive written to a named pipe (as
// /dev/stdout often is) or a device goes into it, the same bytes as into
// a file, and leaves it what it was: renamed over, /dev/null would have
// become a regular file for the whole machine. A symlink to a file gets
// the link replaced, not the file (TestWriteReplacesSymlink), but a
// symlink to a pipe or device (/dev/stdout) is written through.
func TestWriteArchiveSpecialFiles(t *testing.T) {
	for name, write := range archiveWriters {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "file.tar")
			if err := write(t.Context(), file, twoImages(t)); err != nil {
				t.Fatal(err)
			}
			want := mustRead(t, file)

			fifo := filepath.Join(dir, "fifo")
			got := testenv.ReadFIFO(t, fifo)
			if err := write(t.Context(), fifo, twoImages(t)); err != nil {
				t.Fatal(err)
			}
			if !testenv.IsFIFO(fifo) {
				t.Fatal("the pipe was replaced")
			}
			if b := <-got; !bytes.Equal(b, want) {
				t.Errorf("the pipe read %d bytes, not the archive's %d", len(b), len(want))
			}

			if err := write(t.Context(), os.DevNull, twoImages(t)); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Lstat(os.DevNull); err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
				// put the machine's /dev/null back before failing
				os.Remove(os.DevNull)
				_ = syscall.Mknod(os.DevNull, syscall.S_IFCHR|0o666, 1<<8|3)
				_ = os.Chmod(os.DevNull, 0o666)
				t.Fatalf("%s was replaced (%v, %v)", os.DevNull, fi.Mode(), err)
			}

			fifo2, link := filepath.Join(dir, "fifo2"), filepath.Join(dir, "link")
			got = testenv.ReadFIFO(t, fifo2)
			if err := os.Symlink(fifo2, link); err != nil {
				t.Fatal(err)
			}
			if err := write(t.Context(), link, twoImages(t)); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
				t.Fatalf("the symlink to the pipe was replaced (%v, %v)", fi.Mode(), err)
			}
			if b := <-got; !bytes.Equal(b, want) {
				t.Errorf("through the symlink, the pipe read %d bytes, not the archive's %d", len(b), len(want))
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 4 {
				t.Errorf("files left beside: %v", entries)
			}
		})
	}
}
