package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rangeBuffer is a FileRangeWriter into memory that counts the ranges it
// was given.
type rangeBuffer struct {
	bytes.Buffer
	ranges int
}

func (r *rangeBuffer) WriteFileRange(f *os.File, off, n int64) (int64, error) {
	r.ranges++
	return io.Copy(&r.Buffer, io.NewSectionReader(f, off, n))
}

// rangeFile is a FileRangeWriter into a file by copy_file_range(2).
type rangeFile struct {
	f      *os.File
	ranges int
}

func (r *rangeFile) Write(p []byte) (int, error) { return r.f.Write(p) }

func (r *rangeFile) WriteFileRange(f *os.File, off, n int64) (int64, error) {
	r.ranges++
	var done int64
	for done < n {
		c, err := unix.CopyFileRange(int(f.Fd()), &off, int(r.f.Fd()), nil, int(n-done), 0)
		done += int64(c)
		if err != nil || c == 0 {
			return done, err
		}
	}
	return done, nil
}

// randomBytes returns n bytes of a seeded generator.
func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// layerTree makes an upper directory with small and large files (some
// larger than rangeMin, one of them hardlinked), a symlink, an empty file,
// a file capability and nested directories.
func layerTree(t *testing.T, dir string) {
	t.Helper()
	check(t, os.MkdirAll(filepath.Join(dir, "a/b"), 0o755))
	check(t, os.WriteFile(filepath.Join(dir, "a/small"), []byte("small"), 0o644))
	check(t, os.WriteFile(filepath.Join(dir, "a/b/big"), randomBytes(3*rangeMin+17, 1), 0o600))
	check(t, os.Link(filepath.Join(dir, "a/b/big"), filepath.Join(dir, "big-link")))
	check(t, os.WriteFile(filepath.Join(dir, "exact"), randomBytes(rangeMin, 2), 0o644))
	check(t, os.WriteFile(filepath.Join(dir, "under"), randomBytes(rangeMin-1, 3), 0o644))
	check(t, os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644))
	check(t, os.Symlink("a/small", filepath.Join(dir, "link")))
	if err := unix.Lsetxattr(filepath.Join(dir, "exact"), "security.capability", []byte(CapXattrForTest()), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
		t.Fatal(err)
	}
}

// tarWriterLayer serializes dir with archive/tar's Writer writing every
// byte, the way layers were always serialized: the reference the entry by
// entry writer must equal byte for byte (diffIDs must not change).
func tarWriterLayer(t *testing.T, dir string) []byte {
	t.Helper()
	entries, err := collectEntries(context.Background(), dir)
	check(t, err)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	links := map[uint64]string{}
	for _, e := range entries {
		var hdr *tar.Header
		if e.kind != kindFile {
			hdr = &tar.Header{Typeflag: tar.TypeReg, Name: e.name, ModTime: unixEpoch(), Format: tar.FormatPAX}
		} else {
			var got prefetchSlot // metadata only: maxData 0 reads no content
			(&tarPrefetcher{keep: keepXattr}).fetch(&got, e)
			check(t, got.err)
			if hdr, err = tarHeader(e, &got, links); err != nil {
				t.Fatal(err)
			}
		}
		check(t, tw.WriteHeader(hdr))
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			f, err := os.Open(e.src)
			check(t, err)
			_, err = io.Copy(tw, f)
			f.Close()
			check(t, err)
		}
	}
	check(t, tw.Close())
	return buf.Bytes()
}

// TestWriteLayerTarBytes: the tar is tar.Writer's byte for byte, whether
// the writer takes file ranges or not, and larger files (and only those)
// go as ranges.
func TestWriteLayerTarBytes(t *testing.T) {
	dir := t.TempDir()
	layerTree(t, dir)
	want := tarWriterLayer(t, dir)
	var plain bytes.Buffer
	n, err := writeLayerTar(context.Background(), dir, &plain)
	check(t, err)
	if n != int64(len(want)) || !bytes.Equal(plain.Bytes(), want) {
		t.Fatalf("plain writer: %d bytes differ from tar.Writer's %d", n, len(want))
	}
	var rb rangeBuffer
	n, err = writeLayerTar(context.Background(), dir, &rb)
	check(t, err)
	if n != int64(len(want)) || !bytes.Equal(rb.Bytes(), want) {
		t.Fatalf("range writer: %d bytes differ from tar.Writer's %d", n, len(want))
	}
	if rb.ranges != 2 { // a/b/big and exact; big-link is a link entry
		t.Errorf("%d file ranges, want 2 (the files of rangeMin bytes or more)", rb.ranges)
	}
}

// TestWriteTarFileRange: WriteTar into a file by copy_file_range gives the
// committed tar, and still detects a layer changed on disk after the
// commit when the change is inside a file that went as a range (the
// digest is computed by a second read of the file).
func TestWriteTarFileRange(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	s, err := OpenLayerStore(filepath.Join(tmp, "layers"))
	check(t, err)
	upper := filepath.Join(tmp, "upper")
	check(t, os.Mkdir(upper, 0o755))
	layerTree(t, upper)
	layer, err := s.commitDir(ctx, upper, nil, nil, nil)
	check(t, err)

	out, err := os.Create(filepath.Join(tmp, "out.tar"))
	check(t, err)
	defer out.Close()
	rf := &rangeFile{f: out}
	n, err := s.WriteTar(ctx, layer.DiffID, rf)
	check(t, err)
	got, err := os.ReadFile(out.Name())
	check(t, err)
	if n != layer.Size || int64(len(got)) != n || digestOf(got) != layer.DiffID || rf.ranges != 2 {
		t.Fatalf("WriteTar by ranges: %d bytes (file %d, %d ranges), digest %s; want %d bytes, %s", n, len(got), rf.ranges, digestOf(got), layer.Size, layer.DiffID)
	}

	// Same size, one byte changed, same mtime: only the content differs.
	big := filepath.Join(s.Dir(layer.DiffID), "a/b/big")
	var st unix.Stat_t
	check(t, unix.Lstat(big, &st))
	data, err := os.ReadFile(big)
	check(t, err)
	data[len(data)/2] ^= 0xff
	check(t, os.WriteFile(big, data, 0o600))
	check(t, unix.UtimesNano(big, []unix.Timespec{st.Atim, st.Mtim}))
	check(t, out.Truncate(0))
	_, err = out.Seek(0, io.SeekStart)
	check(t, err)
	_, err = s.WriteTar(ctx, layer.DiffID, &rangeFile{f: out})
	var me *ModifiedError
	if !errors.As(err, &me) || me.DiffID != layer.DiffID {
		t.Fatalf("WriteTar of a layer changed inside a ranged file: %v, want a *ModifiedError", err)
	}
}

func digestOf(data []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(data)) }

func unixEpoch() time.Time { return time.Unix(0, 0) }

// TestCommitAdoptsUnpackedLayer: a commit that produces a layer already
// unpacked from an image (COPY --from=IMAGE / / can) makes that layer a
// committed one when its directory serializes to the diffID, so WriteTar
// writes it without the image's blob.
func TestCommitAdoptsUnpackedLayer(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	upper := filepath.Join(tmp, "upper")
	check(t, os.Mkdir(upper, 0o755))
	layerTree(t, upper)
	var tarball bytes.Buffer
	_, err := writeLayerTar(ctx, upper, &tarball)
	check(t, err)
	id := digestOf(tarball.Bytes())

	s, err := OpenLayerStore(filepath.Join(tmp, "layers"))
	check(t, err)
	_, err = s.Unpack(ctx, id, bytes.NewReader(tarball.Bytes()))
	check(t, err)
	if s.Committed(id) {
		t.Fatal("an unpacked layer is committed")
	}
	layer, err := s.commitDir(ctx, upper, nil, nil, nil)
	check(t, err)
	if layer.DiffID != id || !s.Committed(id) {
		t.Fatalf("commit of the same tree: %s, committed %v; want %s adopted", layer.DiffID, s.Committed(id), id)
	}
	var out bytes.Buffer
	if _, err := s.WriteTar(ctx, id, &out); err != nil || !bytes.Equal(out.Bytes(), tarball.Bytes()) {
		t.Fatalf("WriteTar of the adopted layer: %v, %d bytes, want the %d of the tar", err, out.Len(), tarball.Len())
	}
	if _, err := os.Stat(upper); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the committed directory is left behind: %v", err)
	}
}
