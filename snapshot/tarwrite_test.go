package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
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
	tr := tar.NewReader(&buf)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		check(t, err)
		s := hdr.Name + " " + string(hdr.Typeflag) + " " + hdr.Linkname
		for k, v := range hdr.PAXRecords {
			s += " " + k + "=" + v
		}
		got = append(got, strings.TrimSpace(s))
	}
	want := []string{
		"a 0  SCHILY.xattr.security.capability=" + CapXattrForTest(), // first path of the inode is the regular entry
		"b 1 a SCHILY.xattr.security.capability=" + CapXattrForTest(),
		".wh.gone 0",
		"o/ 5",
		"o/.wh..wh..opq 0", // before "o/-dash" although '-' < '.'
		"o/-dash 0",
	}
	if diff := cmp.Diff(sortLike(want), got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
}

// sortLike orders want as the writer does: ".wh.gone" sorts before "a".
func sortLike(want []string) []string {
	return []string{want[2], want[0], want[1], want[3], want[4], want[5]}
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
		tmp, err := s.tempDir("commit")
		check(t, err)
		fs := filepath.Join(tmp, layerFS)
		check(t, os.Mkdir(fs, 0o755))
		check(t, os.WriteFile(filepath.Join(fs, "f"), []byte("x"), 0o644))
		check(t, unix.Lsetxattr(filepath.Join(fs, "f"), "user.note", []byte("v"), 0))
		return tmp
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
	l, err := s.commitDir(ctx, dir, nil, nil)
	check(t, err)
	out.Reset()
	_, err = s.WriteTar(ctx, l.DiffID, &out)
	check(t, err)
	if l.DiffID == id || bytes.Contains(out.Bytes(), []byte("user.note")) {
		t.Errorf("a new commit kept user.note (diffID %s, legacy %s)", l.DiffID, id)
	}
}
