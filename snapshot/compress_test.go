package snapshot_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/builder-dev/builder/snapshot"
	"github.com/klauspost/compress/zstd"
)

// axCompressCmd compresses data with a system tool (bzip2 and xz have no
// writer in Go's standard library); it skips when the tool is missing,
// unless CI=true.
func axCompressCmd(t testing.TB, data []byte, tool string, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed and CI=true", tool)
		}
		t.Skipf("skipping: %s not installed", tool)
	}
	cmd := exec.Command(tool, args...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", tool, args, err)
	}
	return out
}

func axGzip(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func axZstd(t testing.TB, data []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

// axCompressed is data in every supported format.
func axCompressed(t *testing.T, data []byte) map[snapshot.Compression][]byte {
	return map[snapshot.Compression][]byte{
		snapshot.Uncompressed: data,
		snapshot.Gzip:         axGzip(t, data),
		snapshot.Bzip2:        axCompressCmd(t, data, "bzip2", "-c"),
		snapshot.Xz:           axCompressCmd(t, data, "xz", "-c"),
		snapshot.Zstd:         axZstd(t, data),
	}
}

func TestDecompressFormats(t *testing.T) {
	layer := axTar(t, axReg("hello", strings.Repeat("hello world\n", 1000)), axDir("d/"))
	for want, data := range axCompressed(t, layer) {
		t.Run(want.String(), func(t *testing.T) {
			rc, got, err := snapshot.Decompress(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("Decompress: %v", err)
			}
			defer rc.Close()
			if got != want {
				t.Errorf("detected %v, want %v", got, want)
			}
			out, err := io.ReadAll(rc)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(out, layer) {
				t.Errorf("decompressed %d bytes, want the %d-byte layer", len(out), len(layer))
			}
		})
	}
}

func TestDecompressTruncated(t *testing.T) {
	layer := axTar(t, axReg("f", strings.Repeat("0123456789abcdef", 1<<12)))
	for c, data := range axCompressed(t, layer) {
		if c == snapshot.Uncompressed {
			continue
		}
		t.Run(c.String(), func(t *testing.T) {
			rc, _, err := snapshot.Decompress(bytes.NewReader(data[:len(data)/2]))
			if err == nil {
				defer rc.Close()
				_, err = io.ReadAll(rc)
			}
			if err == nil || !strings.Contains(err.Error(), c.String()) {
				t.Errorf("truncated %v: err = %v, want an error naming %v", c, err, c)
			}
		})
	}
}

func TestDecompressXzMissing(t *testing.T) {
	xz := axCompressCmd(t, []byte("data"), "xz", "-c")
	t.Setenv("PATH", t.TempDir())
	_, c, err := snapshot.Decompress(bytes.NewReader(xz))
	if c != snapshot.Xz || err == nil || !strings.Contains(err.Error(), "xz command not found") {
		t.Errorf("Decompress = %v, %v; want Xz and an xz-not-found error", c, err)
	}
}

// TestDecompressCloseEarly: closing before EOF stops the xz child and the
// gzip/zstd goroutines without blocking.
func TestDecompressCloseEarly(t *testing.T) {
	big := bytes.Repeat([]byte("abcdefgh"), 1<<17)
	for c, data := range axCompressed(t, big) {
		t.Run(c.String(), func(t *testing.T) {
			rc, _, err := snapshot.Decompress(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			if _, err := io.ReadFull(rc, buf); err != nil {
				t.Fatalf("read: %v", err)
			}
			if err := rc.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

func TestCompressionString(t *testing.T) {
	want := map[snapshot.Compression]string{snapshot.Uncompressed: "uncompressed", snapshot.Gzip: "gzip",
		snapshot.Bzip2: "bzip2", snapshot.Xz: "xz", snapshot.Zstd: "zstd", snapshot.Compression(42): "Compression(42)"}
	for c, s := range want {
		if c.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(c), c.String(), s)
		}
	}
}

// TestIsArchive: ADD extracts by content, not name (CTX-06), and the
// returned reader replays every byte.
func TestIsArchive(t *testing.T) {
	tarball := axTar(t, axReg("a", "a"))
	bigTar := axTar(t, axReg("big", strings.Repeat("x", 200<<10)))
	var gnu bytes.Buffer
	tw := tar.NewWriter(&gnu)
	if err := tw.WriteHeader(&tar.Header{Name: "g", Typeflag: tar.TypeReg, Format: tar.FormatGNU}); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	text := []byte("this is not a tar, even if it is called x.tar.gz\n")
	fake := make([]byte, 1024)
	copy(fake[257:], "ustar\x0000") // magic without a valid checksum
	cases := []struct {
		name string
		data []byte
		want bool
	}{
		{"tar", tarball, true},
		{"gnu tar", gnu.Bytes(), true},
		{"big tar", bigTar, true},
		{"text", text, false},
		{"empty", nil, false},
		{"empty tar (zeros)", make([]byte, 1024), false},
		{"ustar magic, bad checksum", fake, false},
		{"gzip of text", axGzip(t, text), false},
		{"zstd of text", axZstd(t, text), false},
		{"bzip2 of text", axCompressCmd(t, text, "bzip2", "-c"), false},
		{"xz of text", axCompressCmd(t, text, "xz", "-c"), false},
		{"truncated gzip header", axGzip(t, tarball)[:5], false},
	}
	for c, data := range axCompressed(t, bigTar) {
		cases = append(cases, struct {
			name string
			data []byte
			want bool
		}{c.String() + " of tar", data, true})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, r, err := snapshot.IsArchive(bytes.NewReader(tc.data))
			if err != nil {
				t.Fatalf("IsArchive: %v", err)
			}
			if got != tc.want {
				t.Errorf("IsArchive = %v, want %v", got, tc.want)
			}
			replay, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(replay, tc.data) {
				t.Errorf("replayed %d bytes (err %v), want the %d input bytes", len(replay), err, len(tc.data))
			}
		})
	}
}

type axFailReader struct{ err error }

func (f axFailReader) Read([]byte) (int, error) { return 0, f.err }

func TestIsArchiveReadError(t *testing.T) {
	boom := io.ErrClosedPipe
	_, _, err := snapshot.IsArchive(io.MultiReader(bytes.NewReader([]byte("abc")), axFailReader{boom}))
	if err == nil || !strings.Contains(err.Error(), "detect archive") {
		t.Errorf("err = %v, want a detect archive error", err)
	}
}
