package snapshottest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/snapshot"
	"github.com/google/go-cmp/cmp"
)

// windowsBaseTar is a layer of a Windows image as registries serve them:
// the image's files below Files/, registry hives and a utility VM beside
// them, Windows attributes in PAX records.
func windowsBaseTar(t *testing.T) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	attrs := func(attr string) map[string]string {
		return map[string]string{"MSWINDOWS.fileattr": attr, "LIBARCHIVE.creationtime": fmt.Sprintf("%d.0", baseTime.Unix())}
	}
	for _, e := range []struct {
		name, body string
		dir        bool
	}{
		{name: "Files", dir: true},
		{name: "Files/Windows", dir: true},
		{name: "Files/Windows/win.ini", body: "[fonts]\n"},
		{name: "Files/old", dir: true},
		{name: "Files/old/gone.txt", body: "gone"},
		{name: "Files/old/kept.txt", body: "kept"},
		{name: "Hives", dir: true},
		{name: "Hives/SOFTWARE_BASE", body: "regf"},
		{name: "UtilityVM", dir: true},
		{name: "UtilityVM/Files", dir: true},
		{name: "UtilityVM/Files/vm.sys", body: "vm"},
	} {
		hdr := &tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.body)), ModTime: baseTime, PAXRecords: attrs("32")}
		if e.dir {
			hdr.Typeflag, hdr.Mode, hdr.PAXRecords = tar.TypeDir, 0o755, attrs("16")
		}
		must(t, tw.WriteHeader(hdr))
		_, err := io.WriteString(tw, e.body)
		must(t, err)
	}
	must(t, tw.Close())
	return buf.Bytes()
}

// windowsChange is the change testWindows makes on the Windows base.
func windowsChange(t *testing.T, root string) {
	writeFile(t, root, "Windows/win.ini", "[fonts]\n[extensions]\n", 0o644)
	writeFile(t, root, "Windows/new.exe", "MZ", 0o755)
	must(t, os.Remove(filepath.Join(root, "old/gone.txt")))
	mkdir(t, root, "app", 0o755)
	writeFile(t, root, "app/n1", "shared", 0o644)
	must(t, os.Link(filepath.Join(root, "app/n1"), filepath.Join(root, "app/n2")))
	symlink(t, root, "Windows/win.ini", "lnk")
}

// testWindows: a snapshot over Windows image layers is their Files/
// directories, and a layer committed in the Windows format is the
// BuildKit differ's Windows layer of the same change: the tar the
// ordinary format gives, turned into a Windows layer as BuildKit turns
// it (windowsLayer).
func testWindows(t *testing.T, newFn NewFunc) {
	e := NewEnv(t, newFn)
	ctx := context.Background()
	data := windowsBaseTar(t)
	base := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
	if _, err := e.Layers.Unpack(ctx, base, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	win := snapshot.WithWindowsLayers([]bool{true})

	target := e.MountKey("look", []string{base}, win)
	want := []string{"Windows", "Windows/win.ini", "old", "old/gone.txt", "old/kept.txt"}
	if diff := cmp.Diff(want, names(Manifest(t, target))); diff != "" {
		t.Errorf("root over a Windows layer (-want +got):\n%s", diff)
	}
	e.Unmount(target)
	must(t, e.Sn.Remove(ctx, "look"))

	before := time.Now()
	w := e.commitKey(e.Run("windows", []string{base}, windowsChange, win), snapshot.WithWindowsFormat())
	plain := e.commitKey(e.Run("plain", []string{base}, windowsChange, win))
	got, ordinary := e.Tar(w), e.Tar(plain)
	hdr, err := tar.NewReader(bytes.NewReader(got)).Next()
	if err != nil {
		t.Fatal(err)
	}
	if hdr.ModTime.Before(before.Truncate(time.Second)) || hdr.ModTime.After(time.Now()) {
		t.Errorf("Hives entry dated %v, want the commit's time", hdr.ModTime)
	}
	if wantTar := windowsLayer(t, ordinary, hdr.ModTime); !bytes.Equal(got, wantTar) {
		t.Errorf("Windows layer differs from BuildKit's form of the same diff:\ngot  %q\nwant %q", headers(t, got), headers(t, wantTar))
	}
	if !slices.Contains(headers(t, got), "Files/app/n2 1 644 -> Files/app/n1") {
		t.Errorf("no hardlink to Files/app/n1 in %q", headers(t, got))
	}
	if _, err := e.Layers.Verify(ctx, w, nil); err != nil {
		t.Errorf("verify the Windows layer: %v", err)
	}
	if again := e.Tar(w); !bytes.Equal(got, again) {
		t.Error("the Windows layer's tar changed between two writes")
	}

	linked := e.Commit("linked", nil, func(t *testing.T, root string) { writeFile(t, root, "linked", "l", 0o644) })
	target = e.MountKey("stacked", []string{base, w, linked}, snapshot.WithWindowsLayers([]bool{true, true, false}))
	want = []string{"Windows", "Windows/new.exe", "Windows/win.ini", "app", "app/n1", "app/n2", "linked", "lnk", "old", "old/kept.txt"}
	if diff := cmp.Diff(want, names(Manifest(t, target))); diff != "" {
		t.Errorf("root over the Windows layers (-want +got):\n%s", diff)
	}
	if b, err := os.ReadFile(filepath.Join(target, "Windows/win.ini")); err != nil || string(b) != "[fonts]\n[extensions]\n" {
		t.Errorf("Windows/win.ini over the committed layer: %q, %v", b, err)
	}
	e.Unmount(target)
	must(t, e.Sn.Remove(ctx, "stacked"))
	checkClean(t, e)
}

// commitKey commits the snapshot key Run prepared.
func (e *Env) commitKey(key string, opts ...snapshot.DiffOption) string {
	e.T.Helper()
	layer, err := e.Sn.Commit(context.Background(), key, opts...)
	if err != nil {
		e.T.Fatalf("commit %s: %v", key, err)
	}
	return layer.DiffID
}

// names are the paths of Manifest lines.
func names(manifest []string) []string {
	out := make([]string, len(manifest))
	for i, l := range manifest {
		out[i], _, _ = strings.Cut(l, " ")
	}
	return out
}

// headers describes the entries of a tar: name, type, mode, link target.
func headers(t *testing.T, data []byte) []string {
	var out []string
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		must(t, err)
		s := fmt.Sprintf("%s %c %o", hdr.Name, hdr.Typeflag, hdr.Mode)
		if hdr.Linkname != "" {
			s += " -> " + hdr.Linkname
		}
		out = append(out, s)
	}
}

// windowsLayer turns a layer tar into a Windows layer as BuildKit's
// Windows differ does (moby/buildkit util/winlayers, makeWindowsLayer):
// Hives and Files directory entries dated at, then each entry re-written
// below Files/ with the file type bits in its mode, the attribute,
// creation time and security descriptor PAX records.
func windowsLayer(t *testing.T, layer []byte, at time.Time) []byte {
	const (
		dirSD  = "AQAEgBQAAAAkAAAAAAAAADAAAAABAgAAAAAABSAAAAAgAgAAAQEAAAAAAAUSAAAAAgCoAAcAAAAAAxgA/wEfAAECAAAAAAAFIAAAACACAAAAAxQA/wEfAAEBAAAAAAAFEgAAAAAAGAD/AR8AAQIAAAAAAAUgAAAAIAIAAAALFAAAAAAQAQEAAAAAAAMAAAAAAAMYAKkAEgABAgAAAAAABSAAAAAhAgAAAAIYAAQAAAABAgAAAAAABSAAAAAhAgAAAAIYAAIAAAABAgAAAAAABSAAAAAhAgAA"
		fileSD = "AQAEgBQAAAAkAAAAAAAAADAAAAABAgAAAAAABSAAAAAgAgAAAQEAAAAAAAUSAAAAAgBMAAMAAAAAABgA/wEfAAECAAAAAAAFIAAAACACAAAAABQA/wEfAAEBAAAAAAAFEgAAAAAAGACpABIAAQIAAAAAAAUgAAAAIQIAAA=="
	)
	prepare := func(h *tar.Header) {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			h.Mode |= 1 << 14
			h.PAXRecords["MSWINDOWS.fileattr"] = "16"
		case tar.TypeReg:
			h.Mode |= 1 << 15
			h.PAXRecords["MSWINDOWS.fileattr"] = "32"
		}
		if !h.ModTime.IsZero() {
			h.PAXRecords["LIBARCHIVE.creationtime"] = fmt.Sprintf("%d.%d", h.ModTime.Unix(), h.ModTime.Nanosecond())
		}
		h.Format = tar.FormatPAX
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range []string{"Hives", "Files"} {
		h := &tar.Header{Name: name, Typeflag: tar.TypeDir, ModTime: at}
		prepare(h)
		must(t, tw.WriteHeader(h))
	}
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		must(t, err)
		h.Name = "Files/" + h.Name
		if h.Linkname != "" {
			h.Linkname = "Files/" + h.Linkname
		}
		prepare(h)
		switch h.Typeflag {
		case tar.TypeDir:
			h.PAXRecords["MSWINDOWS.rawsd"] = dirSD
		case tar.TypeReg:
			h.PAXRecords["MSWINDOWS.rawsd"] = fileSD
		}
		must(t, tw.WriteHeader(h))
		_, err = io.Copy(tw, tr)
		must(t, err)
	}
	must(t, tw.Close())
	return buf.Bytes()
}
