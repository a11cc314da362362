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
