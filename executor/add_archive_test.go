package executor

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/builder-dev/builder/internal/testenv"
)

// copyTar builds a tar with a dir, a file, a symlink, a hardlink and a
// whiteout-named file (kept verbatim by ADD).
func copyTar(t *testing.T) []byte {
	t.Helper()
	return copyTarOf(t, []*tar.Header{
		{Name: "pkg/", Typeflag: tar.TypeDir, Mode: 0o750, ModTime: copyMtime, Uid: 5, Gid: 6},
		{Name: "pkg/bin", Typeflag: tar.TypeReg, Mode: 0o4755, ModTime: copyMtime, Size: 3, Uid: 5, Gid: 6},
		{Name: "pkg/link", Typeflag: tar.TypeSymlink, Linkname: "bin", ModTime: copyMtime},
		// A link's header describes the inode it shares, as writers make it.
		{Name: "pkg/hard", Typeflag: tar.TypeLink, Linkname: "pkg/bin", Mode: 0o4755, ModTime: copyMtime, Uid: 5, Gid: 6},
		{Name: "pkg/.wh.gone", Typeflag: tar.TypeReg, Mode: 0o644, Size: 0},
	})
}

// copyTarOf writes the headers into a tar; a regular file's
// body is "bin" for pkg/bin-like entries of Size 3, zeros otherwise.
func copyTarOf(t *testing.T, hdrs []*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		copyCheck(t, tw.WriteHeader(h))
		body := make([]byte, h.Size)
		if h.Size == 3 {
			body = []byte("bin")
		}
		_, err := tw.Write(body)
		copyCheck(t, err)
	}
	copyCheck(t, tw.Close())
	return buf.Bytes()
}

func TestAddArchive(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	raw := copyTar(t)
	compress := map[string]func(t *testing.T) []byte{
		"data.bin": func(t *testing.T) []byte { return raw },
		"a.tar.gz": func(t *testing.T) []byte {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write(raw)
			zw.Close()
			return b.Bytes()
		},
		"a.tar.zst": func(t *testing.T) []byte {
			zw, _ := zstd.NewWriter(nil)
			return zw.EncodeAll(raw, nil)
		},
		"a.tar.xz":  func(t *testing.T) []byte { return copyExec(t, "xz", raw) },
		"a.tar.bz2": func(t *testing.T) []byte { return copyExec(t, "bzip2", raw) },
	}
	for name, fn := range compress {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctxDir, rootfs, victim := copySetup(t)
			copyCheck(t, os.WriteFile(filepath.Join(ctxDir, name), fn(t), 0o644))
			copyCheck(t, copyRun(t, copyRequest{Add: true, Sources: []string{name}, Dest: "/var/run/opt"}, ctxDir, rootfs))
			copyVerify(t, rootfs, map[string]copyWant{
				"run/opt/pkg":          {typ: "dir", mode: 0o750, uid: 5, gid: 6, mtime: true},
				"run/opt/pkg/bin":      {typ: "file", mode: 0o4755, uid: 5, gid: 6, content: "bin", mtime: true},
				"run/opt/pkg/link":     {typ: "symlink", link: "bin"},
				"run/opt/pkg/hard":     {typ: "file", content: "bin", uid: 5, gid: 6},
				"run/opt/pkg/.wh.gone": {typ: "file"},
				"run/opt/" + name:      {typ: "absent"},
			})
			copyVerifyVictim(t, victim)
		})
	}
}

func copyExec(t *testing.T, tool string, in []byte) []byte {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		testenv.SkipOrFail(t, "%s not installed", tool)
	}
	cmd := exec.Command(tool, "-c")
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	copyCheck(t, err)
	return out
}

// copyHostileTar is one archive that ADD must refuse or confine.
type copyHostileTar struct {
	name    string
	hdrs    []*tar.Header
	chown   string
	want    map[string]copyWant
	wantErr string
}

func TestAddArchiveHostile(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	reg := func(name string, size int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: copyMtime, Uid: 7, Gid: 8}
	}
	tests := []copyHostileTar{
		// BuildKit extracts in a chroot of the destination: ".." stops there.
		{name: "dotdot entry", hdrs: []*tar.Header{reg("../../escape", 3), reg("d/../../../in", 3)},
			want: map[string]copyWant{"t/escape": {typ: "file", content: "bin", uid: 7, gid: 8}, "t/in": {typ: "file", content: "bin", uid: 7, gid: 8}, "escape": {typ: "absent"}}},
		{name: "dotdot hardlink", hdrs: []*tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../../victim/secret"}},
			wantErr: `entry "h": hardlink target "../../../victim/secret": open parent directory: no such file or directory`},
		{name: "dotdot hardlink inside", hdrs: []*tar.Header{reg("f", 3), {Name: "h", Typeflag: tar.TypeLink, Linkname: "../f", Mode: 0o644, ModTime: copyMtime, Uid: 7, Gid: 8}},
			want: map[string]copyWant{"t/h": {typ: "file", content: "bin", uid: 7, gid: 8}}},
		{name: "absolute symlink stays in dest", hdrs: []*tar.Header{
			{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"}, reg("l/inner", 3)},
			want: map[string]copyWant{"t/l": {typ: "symlink", link: "/"}, "t/inner": {typ: "file", uid: 7, gid: 8, content: "bin"}, "inner": {typ: "absent"}}},
		// The link leads to /victim of the destination, which does not
		// exist: BuildKit's chrooted MkdirAll stops there.
		{name: "symlink to host dir", hdrs: []*tar.Header{
			{Name: "v", Typeflag: tar.TypeSymlink, Linkname: "../../victim"}, reg("v/secret", 3)},
			wantErr: `entry "v/secret": create parent directory: "v" is a symlink that leads nowhere`},
		{name: "symlink to a directory it made", hdrs: []*tar.Header{
			{Name: "victim/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: copyMtime},
			{Name: "v", Typeflag: tar.TypeSymlink, Linkname: "../../victim"}, reg("v/secret", 3)},
			want: map[string]copyWant{"t/victim/secret": {typ: "file", content: "bin", uid: 7, gid: 8}}},
		{name: "absolute names", hdrs: []*tar.Header{reg("/etc/passwd", 3)},
			want: map[string]copyWant{"t/etc/passwd": {typ: "file", content: "bin", uid: 7, gid: 8}, "etc/passwd": {typ: "file", content: copyRootfs["etc/passwd"]}}},
		{name: "chown overrides archive owner", chown: "app", hdrs: []*tar.Header{
			{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: copyMtime, Uid: 7}, reg("d/f", 3)},
			want: map[string]copyWant{"t/d": {typ: "dir", uid: 1000, gid: 1001, mtime: true}, "t/d/f": {typ: "file", content: "bin", uid: 1000, gid: 1001}}},
		{name: "file as a parent", hdrs: []*tar.Header{reg("f", 3), reg("f/x", 3)},
			wantErr: `entry "f/x": create parent directory: not a directory`},
		{name: "device created as root", hdrs: []*tar.Header{
			{Name: "null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}, reg("after", 3)},
			want: map[string]copyWant{"t/null": {typ: "char", mode: 0o666}, "t/after": {typ: "file", content: "bin", uid: 7, gid: 8}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctxDir, rootfs, victim := copySetup(t)
			copyCheck(t, os.WriteFile(filepath.Join(ctxDir, "in.tar"), copyTarOf(t, tt.hdrs), 0o644))
			err := copyRun(t, copyRequest{Add: true, Sources: []string{"in.tar"}, Dest: "/t", Chown: tt.chown}, ctxDir, rootfs)
			copyCheckResult(t, err, tt.wantErr, rootfs, victim, tt.want)
			if err != nil && strings.Contains(err.Error(), rootfs) {
				t.Errorf("error names the host path of the root: %v", err)
			}
		})
	}
}

// copyUserNSEnv tells a re-executed test binary to act as the child of
// TestAddArchiveDeviceUserNS, with the test's base directory as its value.
const copyUserNSEnv = "BUILDER_TEST_ADD_USERNS_DIR"

// TestAddArchiveDeviceUserNS extracts an archive with a device node in a
// user namespace, where mknod fails with EPERM: the device becomes an
// empty regular file recording it (snapshot's stand-in, serialized as the
// device in the layer), with no warning, and the rest of the archive is
// extracted.
func TestAddArchiveDeviceUserNS(t *testing.T) {
	if dir := os.Getenv(copyUserNSEnv); dir != "" {
		copyUserNSChild(t, dir)
		return
	}
	testenv.RequireRoot(t)
	ctxDir, rootfs, _ := copySetup(t)
	archive := copyTarOf(t, []*tar.Header{
		{Name: "null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "disk", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 8, Devminor: 0},
		{Name: "after", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3, Uid: 7, Gid: 8},
	})
	copyCheck(t, os.WriteFile(filepath.Join(ctxDir, "dev.tar"), archive, 0o644))
	ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestAddArchiveDeviceUserNS$", "-test.v")
	cmd.Env = append(os.Environ(), copyUserNSEnv+"="+filepath.Dir(ctxDir))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: ids, GidMappings: ids}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		testenv.SkipOrFail(t, "test requires user namespaces: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child in user namespace: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "WARN") {
		t.Errorf("child warned:\n%s", out.String())
	}
	copyVerify(t, rootfs, map[string]copyWant{
		"t/null": {typ: "file", content: ""}, "t/disk": {typ: "file", content: ""}, "t/after": {typ: "file", content: "bin", uid: 7, gid: 8},
	})
	for name, want := range map[string]string{"t/null": "c 1:3", "t/disk": "b 8:0"} {
		buf := make([]byte, 64)
		n, err := syscall.Getxattr(filepath.Join(rootfs, name), "user.builder.override", buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("%s records %q (%v), want %q", name, buf[:max(n, 0)], err, want)
		}
	}
}

// copyUserNSChild runs the ADD inside the user namespace and prints the
// warnings it receives.
func copyUserNSChild(t *testing.T, dir string) {
	req := copyRequest{Add: true, Sources: []string{"dev.tar"}, Dest: "/t",
		Warn: func(msg string) { fmt.Println("WARN", msg) }}
	copyCheck(t, copyRun(t, req, filepath.Join(dir, "ctx"), filepath.Join(dir, "rootfs")))
}

// TestAddArchiveUnpackFalse: ADD --unpack=false copies a local archive as
// it is (BuildKit testDockerfileAddArchive).
func TestAddArchiveUnpackFalse(t *testing.T) {
	testenv.RequireRoot(t)
	ctxDir, rootfs, _ := copySetup(t)
	if err := os.WriteFile(filepath.Join(ctxDir, "t.tar"), copyTar(t), 0o644); err != nil {
		t.Fatal(err)
	}
	copyCheck(t, copyRun(t, copyRequest{Add: true, Sources: []string{"t.tar"}, Dest: "/", Unpack: ptrTo(false)}, ctxDir, rootfs))
	copyVerify(t, rootfs, map[string]copyWant{"t.tar": {typ: "file", content: string(copyTar(t))}, "pkg": {typ: "absent"}})
}

// TestAddArchiveWildcard: one wildcard matching several archives extracts
// each into a destination written without a slash (BuildKit
// testDockerfileAddArchiveWildcard).
func TestAddArchiveWildcard(t *testing.T) {
	testenv.RequireRoot(t)
	ctxDir, rootfs, _ := copySetup(t)
	for _, n := range []string{"one", "two"} {
		body := copyTarOf(t, []*tar.Header{{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: 3, ModTime: copyMtime}})
		if err := os.WriteFile(filepath.Join(ctxDir, n+".tar"), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copyCheck(t, copyRun(t, copyRequest{Add: true, Sources: []string{"*.tar"}, Dest: "/dest"}, ctxDir, rootfs))
	copyVerify(t, rootfs, map[string]copyWant{"dest/one": {typ: "file", content: "bin"}, "dest/two": {typ: "file", content: "bin"}})
}
