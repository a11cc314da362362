package exporter

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/builder-dev/builder/snapshot"
)

// TestArchiveFileRanges: a blob that writes itself into the archive and
// hands over file ranges gives the same archive bytes as the same blob
// streamed; a blob writing more or fewer bytes than its size fails.
func TestArchiveFileRanges(t *testing.T) {
	dir := t.TempDir()
	content := bytes.Repeat([]byte("0123456789abcdef"), 100_000) // 1.6 MB, not a multiple of 512
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	head, tail := []byte("header bytes "), []byte(" trailer")
	size := int64(len(head) + len(content) - 10 + len(tail))
	want := append(append(append([]byte{}, head...), content[10:]...), tail...)
	ranges := 0
	writeTo := func(w io.Writer) (int64, error) {
		fw, ok := w.(snapshot.FileRangeWriter)
		if !ok {
			t.Fatalf("the archive writer %T takes no file ranges", w)
		}
		f, err := os.Open(src)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		n1, err := fw.Write(head)
		if err != nil {
			return int64(n1), err
		}
		ranges++
		n2, err := fw.WriteFileRange(f, 10, int64(len(content)-10))
		if err != nil {
			return int64(n1) + n2, err
		}
		n3, err := fw.Write(tail)
		return int64(n1) + n2 + int64(n3), err
	}
	write := func(name string, b blobEntry) ([]byte, error) {
		p := filepath.Join(dir, name)
		err := writeAtomic(context.Background(), p, func(d *detTar) error {
			return d.blobs(blobSet{b.hex: b})
		})
		if err != nil {
			return nil, err
		}
		return os.ReadFile(p)
	}
	hex := "aa"
	streamed, err := write("streamed.tar", blobEntry{hex: hex, size: size, open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(want)), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	ranged, err := write("ranged.tar", blobEntry{hex: hex, size: size, writeTo: writeTo})
	if err != nil {
		t.Fatal(err)
	}
	if ranges != 1 || !bytes.Equal(ranged, streamed) {
		t.Fatalf("archive with a file range (%d ranges, %d bytes) differs from the streamed one (%d bytes)", ranges, len(ranged), len(streamed))
	}
	if _, err := write("short.tar", blobEntry{hex: hex, size: size + 1, writeTo: writeTo}); err == nil {
		t.Error("a blob shorter than its size was written")
	}
	if _, err := os.Stat(filepath.Join(dir, "short.tar")); !os.IsNotExist(err) {
		t.Errorf("a failed archive was left: %v", err)
	}
}

// TestArchiveSyncBehind: an fsync started behind a copied file range
// (syncBehind, as a kept blob's copy starts one) while the archive goes
// on — buffered writes, a truncation back over the range, more writes —
// leaves exactly what was written last, and a second range while the
// first fsync may still run starts no second one before it ends.
func TestArchiveSyncBehind(t *testing.T) {
	dir := t.TempDir()
	content := bytes.Repeat([]byte("kept blob "), 500_000) // 5 MB
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	f, err := os.Create(filepath.Join(dir, "archive"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := newArchiveWriter(f)
	w := syncBehindRanges{a}
	if _, err := a.Write([]byte("head ")); err != nil {
		t.Fatal(err)
	}
	at := a.n
	if n, err := w.WriteFileRange(in, 0, int64(len(content))); err != nil || n != int64(len(content)) {
		t.Fatalf("WriteFileRange = %d, %v", n, err)
	}
	first := a.syncing
	if first == nil {
		t.Fatal("no fsync started behind the copied range")
	}
	if n, err := w.WriteFileRange(in, 0, 100); err != nil || n != 100 {
		t.Fatalf("second WriteFileRange = %d, %v", n, err)
	}
	select {
	case <-first:
	default:
		if a.syncing != first {
			t.Error("a second fsync started while the first one ran")
		}
	}
	if err := a.truncate(at); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	if err := a.flush(); err != nil {
		t.Fatal(err)
	}
	a.waitSync()
	select {
	case <-a.syncing:
	default:
		t.Fatal("waitSync returned before the fsync ended")
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if want := "head tail"; string(got) != want || a.n != int64(len(want)) {
		t.Errorf("archive %q (%d bytes counted), want %q", got, a.n, want)
	}
}
