package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/builder-dev/builder/internal/testenv"
)

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestWriteLayerTar serializes a hand-made upper dir: whiteouts, an opaque
// dir whose marker precedes its children, hardlinks, xattr filtering, and
// skipped sockets.
func TestWriteLayerTar(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	check(t, os.Mkdir(filepath.Join(dir, "o"), 0o755))
	check(t, unix.Lsetxattr(filepath.Join(dir, "o"), opaqueXattr, []byte("y"), 0))
	check(t, unix.Lsetxattr(filepath.Join(dir, "o"), "trusted.overlay.impure", []byte("y"), 0))
	check(t, os.WriteFile(filepath.Join(dir, "o", "-dash"), []byte("d"), 0o644))
	check(t, unix.Mknod(filepath.Join(dir, "gone"), unix.S_IFCHR, 0))
	check(t, os.WriteFile(filepath.Join(dir, "b"), []byte("bb"), 0o644))
	check(t, os.Link(filepath.Join(dir, "b"), filepath.Join(dir, "a")))
	check(t, unix.Lsetxattr(filepath.Join(dir, "b"), "security.capability", []byte(CapXattrForTest()), 0))
	check(t, unix.Lsetxattr(filepath.Join(dir, "b"), "user.dropped", []byte("1"), 0)) // BuildKit's layers hold no user.*
	check(t, unix.Lsetxattr(filepath.Join(dir, "b"), "user.overlay.x", []byte("1"), 0))
	check(t, unix.Mknod(filepath.Join(dir, "sock"), unix.S_IFSOCK|0o644, 0))

	var buf bytes.Buffer
	n, err := writeLayerTar(context.Background(), dir, &buf)
	check(t, err)
	if n != int64(buf.Len()) {
		t.Errorf("reported %d bytes, wrote %d", n, buf.Len())
	}
	var got []string
	eachTarEntry(t, &buf, func(hdr *tar.Header, _ io.Reader) {
		s := hdr.Name + " " + string(hdr.Typeflag) + " " + hdr.Linkname
		for k, v := range hdr.PAXRecords {
			s += " " + k + "=" + v
		}
		got = append(got, strings.TrimSpace(s))
	})
	want := []string{
		"a 0  SCHILY.xattr.security.capability=" + CapXattrForTest(), // first path of the inode is the regular entry
		"b 1 a SCHILY.xattr.security.capability=" + CapXattrForTest(),
		".wh.gone 0", // where "gone" would be, as BuildKit's differ writes it
		"o/ 5",
		"o/.wh..wh..opq 0", // before "o/-dash" although '-' < '.'
		"o/-dash 0",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
}

// TestLayerEntryOrder: entries sort as BuildKit's differ walks a
// directory (a directory's entries before a sibling whose name extends
// its own, a whiteout at the deleted name's place), and sortPathOrder
// gives back the order of layers committed before that (by path string,
// whiteouts by their own names), which such layers still serialize in.
func TestLayerEntryOrder(t *testing.T) {
	testenv.RequireRoot(t) // whiteouts are device nodes
	dir := t.TempDir()
	for _, d := range []string{"a", "a/sub", "o"} {
		check(t, os.Mkdir(filepath.Join(dir, d), 0o755))
	}
	check(t, unix.Lsetxattr(filepath.Join(dir, "o"), opaqueXattr, []byte("y"), 0))
	for _, f := range []string{"a/f", "a/sub/g", "a-b", "a.c", "a0", "o/-dash", "o/x"} {
		check(t, os.WriteFile(filepath.Join(dir, f), nil, 0o644))
	}
	for _, w := range []string{"a/gone", "a.b", "z"} {
		check(t, unix.Mknod(filepath.Join(dir, w), unix.S_IFCHR, 0))
	}
	names := func(entries []tarEntry) []string {
		var out []string
		for _, e := range entries {
			out = append(out, e.name)
		}
		return out
	}
	entries, err := collectEntries(t.Context(), dir)
	check(t, err)
	want := []string{"a/", "a/f", "a/.wh.gone", "a/sub/", "a/sub/g", "a-b", ".wh.a.b", "a.c", "a0",
		"o/", "o/.wh..wh..opq", "o/-dash", "o/x", ".wh.z"}
	if diff := cmp.Diff(want, names(entries)); diff != "" {
		t.Errorf("walk order (-want +got):\n%s", diff)
	}
	sortPathOrder(entries)
	wantPath := []string{".wh.a.b", ".wh.z", "a/", "a-b", "a.c", "a/.wh.gone", "a/f", "a/sub/", "a/sub/g", "a0",
		"o/", "o/.wh..wh..opq", "o/-dash", "o/x"}
	if diff := cmp.Diff(wantPath, names(entries)); diff != "" {
		t.Errorf("path order (-want +got):\n%s", diff)
	}
}

func TestWriteLayerTarEmpty(t *testing.T) {
	var buf bytes.Buffer
	n, err := writeLayerTar(context.Background(), t.TempDir(), &buf)
	check(t, err)
	if n != 1024 || !bytes.Equal(buf.Bytes(), make([]byte, 1024)) {
		t.Errorf("empty layer is %d bytes, want 1024 zero bytes", n)
	}
}

func TestWriteLayerTarCancelled(t *testing.T) {
	dir := t.TempDir()
	check(t, os.WriteFile(filepath.Join(dir, "f"), nil, 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := writeLayerTar(ctx, dir, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
}

// TestLegacyLayerXattrs: a layer committed before its metadata recorded
// the xattr rule held user.* xattrs in its tar; it still serializes to its
// diffID (an export of an older build's layer), while a new commit of the
// same directory leaves them out.
func TestLegacyLayerXattrs(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	s, err := OpenLayerStore(filepath.Join(t.TempDir(), "layers"))
	check(t, err)
	mkLayer := func() string {
		return tempLayer(t, s, func(fs string) {
			check(t, os.WriteFile(filepath.Join(fs, "f"), []byte("x"), 0o644))
			check(t, unix.Lsetxattr(filepath.Join(fs, "f"), "user.note", []byte("v"), 0))
		})
	}
	tarOf := func(dir string, keep func(string) bool) []byte {
		entries, err := collectEntries(ctx, dir)
		check(t, err)
		var buf bytes.Buffer
		_, err = writeEntriesTar(ctx, dir, entries, &buf, tarFormat{keep: keep})
		check(t, err)
		return buf.Bytes()
	}
	tmp := mkLayer()
	legacy := tarOf(filepath.Join(tmp, layerFS), snapshotXattr)
	if !bytes.Contains(legacy, []byte("user.note")) {
		t.Fatal("the legacy rule's tar lacks user.note")
	}
	id := digestOf(legacy)
	check(t, s.install(ctx, tmp, strings.TrimPrefix(id, "sha256:"), layerMetadata{DiffID: id, Size: int64(len(legacy)), Committed: true}))
	var out bytes.Buffer
	if _, err := s.WriteTar(ctx, id, &out); err != nil {
		t.Fatalf("WriteTar of a legacy layer: %v", err)
	}
	if !bytes.Equal(out.Bytes(), legacy) {
		t.Error("WriteTar of a legacy layer differs from the tar it was committed as")
	}

	dir := filepath.Join(mkLayer(), layerFS)
	l, err := s.commitDir(ctx, dir, nil, nil, nil)
	check(t, err)
	out.Reset()
	_, err = s.WriteTar(ctx, l.DiffID, &out)
	check(t, err)
	if l.DiffID == id || bytes.Contains(out.Bytes(), []byte("user.note")) {
		t.Errorf("a new commit kept user.note (diffID %s, legacy %s)", l.DiffID, id)
	}
}

// TestLegacyLayerOrder: a layer committed before its metadata recorded
// the entry order lists its entries by path; it still serializes to its
// diffID (also a second time, trusting the stat digest the first
// recorded), while a new commit of the same directory lists them as
// BuildKit's differ does.
func TestLegacyLayerOrder(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	s, err := OpenLayerStore(filepath.Join(t.TempDir(), "layers"))
	check(t, err)
	mkLayer := func() string {
		return tempLayer(t, s, func(fs string) {
			check(t, os.Mkdir(filepath.Join(fs, "a"), 0o755))
			check(t, os.WriteFile(filepath.Join(fs, "a", "f"), []byte("x"), 0o644))
			check(t, os.WriteFile(filepath.Join(fs, "a-b"), []byte("y"), 0o644))
		})
	}
	tmp := mkLayer()
	fs := filepath.Join(tmp, layerFS)
	entries, err := collectEntries(ctx, fs)
	check(t, err)
	sortPathOrder(entries)
	var buf bytes.Buffer
	_, err = writeEntriesTar(ctx, fs, entries, &buf, tarFormat{keep: keepXattr})
	check(t, err)
	legacy := buf.Bytes()
	id := digestOf(legacy)
	check(t, s.install(ctx, tmp, strings.TrimPrefix(id, "sha256:"), layerMetadata{DiffID: id, Size: int64(len(legacy)), Committed: true, Xattrs: layerXattrsRule}))
	for i := range 2 {
		var out bytes.Buffer
		if _, err := s.WriteTar(ctx, id, &out); err != nil {
			t.Fatalf("WriteTar %d of a legacy layer: %v", i, err)
		}
		if !bytes.Equal(out.Bytes(), legacy) {
			t.Errorf("WriteTar %d of a legacy layer differs from the tar it was committed as", i)
		}
	}

	l, err := s.commitDir(ctx, filepath.Join(mkLayer(), layerFS), nil, nil, nil)
	check(t, err)
	var out bytes.Buffer
	_, err = s.WriteTar(ctx, l.DiffID, &out)
	check(t, err)
	var names []string
	eachTarEntry(t, &out, func(hdr *tar.Header, _ io.Reader) { names = append(names, hdr.Name) })
	if want := []string{"a/", "a/f", "a-b"}; l.DiffID == id || !slices.Equal(names, want) {
		t.Errorf("a new commit lists %q (diffID %s, legacy %s), want %q", names, l.DiffID, id, want)
	}
}

// tempLayer makes a commit directory of s whose layer directory fill
// writes, and returns the commit directory.
func tempLayer(t *testing.T, s *LayerStore, fill func(fs string)) string {
	t.Helper()
	tmp, err := s.tempDir("commit")
	check(t, err)
	fs := filepath.Join(tmp, layerFS)
	check(t, os.Mkdir(fs, 0o755))
	fill(fs)
	return tmp
}

// TestWriteLayerTarContents: files of every size class in one layer —
// read ahead, copied through the header writer, handed over as ranges —
// in an order that switches between them, serialize to the same bytes
// whether or not the writer takes ranges, and read back whole.
func TestWriteLayerTarContents(t *testing.T) {
	dir := t.TempDir()
	sizes := []int{rangeMin + 1, 0, 1, prefetchMax + 3, 511, 512, 513, rangeMin - 1, rangeMin, 7, prefetchMax + 4096, 1}
	want := map[string][]byte{}
	for i, size := range sizes {
		data := bytes.Repeat([]byte{byte('a' + i)}, size)
		name := string(rune('a'+i)) + ".bin"
		want[name] = data
		check(t, os.WriteFile(filepath.Join(dir, name), data, 0o644))
	}
	check(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	check(t, os.WriteFile(filepath.Join(dir, "d", "tail"), []byte("tail"), 0o644))
	want["d/tail"] = []byte("tail")

	var plain bytes.Buffer
	n, err := writeLayerTar(context.Background(), dir, &plain)
	check(t, err)
	if n != int64(plain.Len()) {
		t.Errorf("reported %d bytes, wrote %d", n, plain.Len())
	}
	var ranged rangeBuffer
	n, err = writeLayerTar(context.Background(), dir, &ranged)
	check(t, err)
	if n != int64(ranged.Len()) {
		t.Errorf("ranges: reported %d bytes, wrote %d", n, ranged.Len())
	}
	if ranged.ranges != 4 {
		t.Errorf("%d files handed over as ranges, want 4", ranged.ranges)
	}
	if !bytes.Equal(plain.Bytes(), ranged.Bytes()) {
		t.Error("the tar written with ranges differs from the one without")
	}
	got := map[string][]byte{}
	eachTarEntry(t, &plain, func(hdr *tar.Header, content io.Reader) {
		if hdr.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(content)
			check(t, err)
			got[hdr.Name] = data
		}
	})
	if len(got) != len(want) {
		t.Errorf("%d files read back, want %d", len(got), len(want))
	}
	for name, data := range want {
		if !bytes.Equal(got[name], data) {
			t.Errorf("%s: %d bytes read back, want %d", name, len(got[name]), len(data))
		}
	}
}

// eachTarEntry calls fn with every header of the tar r and its content.
func eachTarEntry(t *testing.T, r io.Reader, fn func(hdr *tar.Header, content io.Reader)) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		check(t, err)
		fn(hdr, tr)
	}
}
