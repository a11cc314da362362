package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/builder-dev/builder/internal/testenv"
)

func TestOverrideFormat(t *testing.T) {
	uid, gid := 33, 65534
	for _, tc := range []struct {
		in   string
		want string // "" = invalid
	}{
		{"c 1:3", "c 1:3"},
		{"b 8:0 uid=33", "b 8:0 uid=33"},
		{"uid=33 gid=65534", "uid=33 gid=65534"},
		{"gid=7", "gid=7"},
		{"c 1", ""},
		{"c 1:x", ""},
		{"uid=-1", ""},
		{"x=1", ""},
		{"c", ""},
	} {
		o, err := parseOverride(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("parseOverride(%q) = %v, want an error", tc.in, o)
			}
			continue
		}
		if err != nil || o.String() != tc.want {
			t.Errorf("parseOverride(%q) = %q, %v; want %q", tc.in, o, err, tc.want)
		}
	}
	got := override{dev: 'b', rdev: 0x0801, uid: &uid, gid: &gid}.String()
	if got != "b 8:1 uid=33 gid=65534" {
		t.Errorf("String = %q", got)
	}
}

func TestOverrideHeader(t *testing.T) {
	hdr, err := overrideHeader(&tar.Header{Name: "dev/sda", Typeflag: tar.TypeReg, Size: 3, Mode: 0o660}, "b 8:0 gid=6")
	if err != nil {
		t.Fatal(err)
	}
	if hdr.Typeflag != tar.TypeBlock || hdr.Devmajor != 8 || hdr.Devminor != 0 || hdr.Size != 0 || hdr.Gid != 6 || hdr.Uid != 0 || hdr.Mode != 0o660 {
		t.Errorf("header = %+v", hdr)
	}
	if _, err := overrideHeader(&tar.Header{Name: "d", Typeflag: tar.TypeDir}, "c 1:3"); err == nil {
		t.Error("a device record on a directory was accepted")
	}
}

// roundTripUserNSEnv tells a re-executed test binary to act as the child
// of TestRoundTripInUserNS: extract $ROUND_TRIP_DIR/in.tar and write what
// it serializes to out.tar.
const roundTripUserNSEnv = "BUILDER_TEST_ROUND_TRIP_DIR"

// roundTripTar is a layer with what a user namespace cannot write as is:
// device nodes, owners a single-id mapping lacks (on a directory, files,
// a hardlink), setuid bits, xattrs, whiteouts and an opaque directory.
func roundTripTar(t *testing.T) []byte {
	t.Helper()
	epoch := time.Unix(1700000000, 0)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []tar.Header{
		{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 33, Gid: 33},
		{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 65534, Gid: 65534, Size: 2,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": CapXattrForTest()}},
		// A link's header describes the inode it shares, as writers make it.
		{Name: "d/hl", Typeflag: tar.TypeLink, Linkname: "d/f", Mode: 0o640, Uid: 65534, Gid: 65534,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": CapXattrForTest()}},
		{Name: "suid", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 0, Gid: 1000, Size: 2},
		{Name: "dev/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "dev/sda", Typeflag: tar.TypeBlock, Mode: 0o660, Gid: 6, Devmajor: 8},
		{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o600},
		{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "d/f", Mode: 0o777},
		{Name: ".wh.gone", Typeflag: tar.TypeReg},
		{Name: "o/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "o/.wh..wh..opq", Typeflag: tar.TypeReg},
	} {
		h.ModTime, h.Format = epoch, tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte("x\n")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// extractSerialize unpacks a layer tar as the LayerStore does (overlay
// whiteouts) and serializes the directory again.
func extractSerialize(t *testing.T, dir string, in []byte) []byte {
	t.Helper()
	fs := filepath.Join(dir, "fs")
	if err := os.Mkdir(fs, 0o755); err != nil {
		t.Fatal(err)
	}
	var warns []string
	if _, err := Apply(context.Background(), fs, bytes.NewReader(in), WithOverlayWhiteouts(), WithWarn(func(m string) { warns = append(warns, m) })); err != nil {
		t.Fatal(err)
	}
	if len(warns) > 0 {
		t.Errorf("warnings: %q", warns)
	}
	var out bytes.Buffer
	if _, err := writeLayerTar(context.Background(), fs, &out); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestRoundTripInUserNS: a layer extracted and serialized again in a user
// namespace (a rootless build) gives the same tar, byte for byte, as it
// does for root, both with a single-id mapping (only uid/gid 0) and with a
// subordinate range: devices and unmapped owners are recorded beside
// their stand-ins and serialized from the record.
func TestRoundTripInUserNS(t *testing.T) {
	if dir := os.Getenv(roundTripUserNSEnv); dir != "" {
		in, err := os.ReadFile(filepath.Join(dir, "in.tar"))
		if err != nil {
			t.Fatal(err)
		}
		out := extractSerialize(t, dir, in)

		if err := os.WriteFile(filepath.Join(dir, "out.tar"), out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	testenv.RequireRoot(t)
	want := extractSerialize(t, t.TempDir(), roundTripTar(t))
	if !bytes.Contains(want, []byte("dev/sda")) || !bytes.Contains(want, []byte("security.capability")) {
		t.Fatalf("root serialization lacks entries:\n%q", want)
	}
	for _, size := range []int{1, 65536} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "in.tar"), want, 0o644); err != nil {
			t.Fatal(err)
		}
		ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: size}}
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestRoundTripInUserNS$", "-test.v")
		cmd.Env = append(os.Environ(), roundTripUserNSEnv+"="+dir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: ids, GidMappings: ids}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child with %d mapped ids: %v\n%s", size, err, out)
		}
		got, err := os.ReadFile(filepath.Join(dir, "out.tar"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("with %d mapped ids the layer serializes differently:\n got %s\nwant %s", size, tarListing(t, got), tarListing(t, want))
		}
	}
}

func tarListing(t *testing.T, b []byte) string {
	t.Helper()
	var lines []string
	eachTarEntry(t, bytes.NewReader(b), func(h *tar.Header, _ io.Reader) {
		lines = append(lines, fmt.Sprintf("%s %c mode %o uid %d gid %d dev %d:%d link %q pax %v", h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Devmajor, h.Devminor, h.Linkname, h.PAXRecords))
	})
	return "\n  " + strings.Join(lines, "\n  ")
}

func TestWhiteoutError(t *testing.T) {
	if err := whiteoutError("x", unix.EPERM); !errors.Is(err, ErrWhiteoutRefused) || !errors.Is(err, unix.EPERM) {
		t.Errorf("EPERM: %v", err)
	}
	if err := whiteoutError("x", unix.ENOSPC); errors.Is(err, ErrWhiteoutRefused) {
		t.Errorf("ENOSPC: %v", err)
	}
}
