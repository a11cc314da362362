// Package snapshottest is the conformance suite every snapshot.Snapshotter
// must pass: the same changes must give the same layer tar, entry for entry.
// The tests mount, so they need root (and skip without it unless CI=true).
package snapshottest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/snapshot"
	"golang.org/x/sys/unix"

	"github.com/builder-dev/builder/internal/testenv"
)

// NewFunc makes the snapshotter under test over layers, keeping its active
// snapshots in root.
type NewFunc func(t *testing.T, layers *snapshot.LayerStore, root string) snapshot.Snapshotter

var (
	// baseTime is the mtime of every base entry; changed entries get
	// changeTime, so layers are byte-for-byte reproducible.
	baseTime   = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	changeTime = time.Date(2021, 6, 1, 12, 0, 0, 0, time.UTC)
)

// RequireRoot skips t unless the process is root; with CI=true it fails.
func RequireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
}

// Env is one snapshotter over a fresh layer store holding the base layer.
type Env struct {
	T      *testing.T
	Layers *snapshot.LayerStore
	Sn     snapshot.Snapshotter
	Root   string // the snapshotter's root
	Base   string // diffID of the base layer
	tmp    string
}

// NewEnv builds a layer store, the snapshotter, and the base layer.
func NewEnv(t *testing.T, newFn NewFunc) *Env {
	t.Helper()
	RequireRoot(t)
	tmp := t.TempDir()
	layers, err := snapshot.OpenLayerStore(filepath.Join(tmp, "layers"))
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{T: t, Layers: layers, Root: filepath.Join(tmp, "active"), tmp: tmp}
	e.Sn = newFn(t, layers, e.Root)
	t.Cleanup(func() { e.Sn.Close() })
	e.Base = e.Commit("base", nil, writeBase)
	return e
}

// Commit prepares key over parents, mounts it, runs change, unmounts and
// commits. Changed entries get fixed mtimes first.
func (e *Env) Commit(key string, parents []string, change func(t *testing.T, root string), opts ...snapshot.DiffOption) string {
	e.T.Helper()
	layer, err := e.Sn.Commit(context.Background(), e.Run(key, parents, change), opts...)
	if err != nil {
		e.T.Fatalf("commit %s: %v", key, err)
	}
	return layer.DiffID
}

// Run prepares key over parents (with opts), mounts it, runs change and
// unmounts; it returns key, ready to Commit.
func (e *Env) Run(key string, parents []string, change func(t *testing.T, root string), opts ...snapshot.PrepareOption) string {
	e.T.Helper()
	target := e.MountKey(key, parents, opts...)
	change(e.T, target)
	fixTimes(e.T, target)
	e.Unmount(target)
	return key
}

// MountKey prepares key (with opts) and mounts it on a new directory.
func (e *Env) MountKey(key string, parents []string, opts ...snapshot.PrepareOption) string {
	e.T.Helper()
	mounts, err := e.Sn.Prepare(context.Background(), key, parents, opts...)
	if err != nil {
		e.T.Fatalf("prepare %s: %v", key, err)
	}
	target, err := os.MkdirTemp(e.tmp, "mnt-")
	if err != nil {
		e.T.Fatal(err)
	}
	for _, m := range mounts {
		if err := m.Mount(target); err != nil {
			e.T.Fatalf("mount %s: %v", key, err)
		}
	}
	e.T.Cleanup(func() { _ = snapshot.Unmount(target) })
	return target
}

// Unmount unmounts target.
func (e *Env) Unmount(target string) {
	e.T.Helper()
	if err := snapshot.Unmount(target); err != nil {
		e.T.Fatal(err)
	}
}

// Tar returns the layer tar of diffID.
func (e *Env) Tar(diffID string) []byte {
	e.T.Helper()
	var buf bytes.Buffer
	if _, err := e.Layers.WriteTar(context.Background(), diffID, &buf); err != nil {
		e.T.Fatalf("write tar: %v", err)
	}
	return buf.Bytes()
}

// writeBase makes the base layer every case changes.
func writeBase(t *testing.T, root string) {
	for _, d := range []string{"etc", "d", "d/sub", "tree", "tree/x", "tree/x/y", "opq", "ren", "empty"} {
		mkdir(t, root, d, 0o755)
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0::/root:/bin/sh\n", "d/a": "a", "d/b": "b", "d/sub/c": "c",
		"tree/x/y/z": "z", "tree/t": "t", "keep": "keep", "mod": "old content", "chm": "chm",
		"own": "own", "same": "AAAA", "lowerfile": "L", "opq/old1": "1", "opq/old2": "2", "ren/f": "f",
	}
	for name, content := range files {
		writeFile(t, root, name, content, 0o644)
	}
	symlink(t, root, "keep", "lnk")
	walk(t, root, func(p string, _ *unix.Stat_t) { setMtime(t, p, baseTime) })
}

// fixTimes gives every entry that changed (mtime not baseTime) changeTime,
// so layers do not depend on the clock.
func fixTimes(t *testing.T, root string) {
	walk(t, root, func(p string, st *unix.Stat_t) {
		if st.Mtim.Sec != baseTime.Unix() || st.Mtim.Nsec != 0 {
			setMtime(t, p, changeTime)
		}
	})
}

// walk calls fn for every entry below root, children first.
func walk(t *testing.T, root string, fn func(p string, st *unix.Stat_t)) {
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range entries {
		p := filepath.Join(root, de.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			walk(t, p, fn)
		}
		fn(p, &st)
	}
}

func setMtime(t *testing.T, p string, tm time.Time) {
	ts := []unix.Timespec{unix.NsecToTimespec(tm.UnixNano()), unix.NsecToTimespec(tm.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, root, name string, mode os.FileMode) {
	if err := os.Mkdir(filepath.Join(root, name), mode); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, root, name, content string, mode os.FileMode) {
	p := filepath.Join(root, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, root, target, name string) {
	if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Entries lists the entries of a layer tar, one line each: name, type,
// mode, owner, then size or link target, xattrs, and the mtime of
// whiteouts (which must be the epoch).
func Entries(t testing.TB, data []byte) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var out []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read layer tar: %v", err)
		}
		out = append(out, describe(t, hdr, tr))
	}
}

func describe(t testing.TB, hdr *tar.Header, r io.Reader) string {
	if hdr.Format != tar.FormatPAX && hdr.Format != tar.FormatUSTAR {
		t.Errorf("entry %s: format %v, want PAX", hdr.Name, hdr.Format)
	}
	if hdr.Uname != "" || hdr.Gname != "" || !hdr.AccessTime.IsZero() || !hdr.ChangeTime.IsZero() {
		t.Errorf("entry %s: has uname/gname/atime/ctime", hdr.Name)
	}
	if hdr.ModTime.Nanosecond() != 0 {
		t.Errorf("entry %s: mtime %v not whole seconds", hdr.Name, hdr.ModTime)
	}
	base := filepath.Base(hdr.Name)
	if strings.HasPrefix(base, ".wh.") {
		if hdr.ModTime.Unix() != 0 || hdr.Size != 0 || hdr.Typeflag != tar.TypeReg {
			t.Errorf("whiteout %s: mtime %v size %d type %c, want epoch 0, empty, regular", hdr.Name, hdr.ModTime, hdr.Size, hdr.Typeflag)
		}
		return hdr.Name
	}
	s := fmt.Sprintf("%s %s %04o %d:%d", hdr.Name, typeName(hdr.Typeflag), hdr.Mode, hdr.Uid, hdr.Gid)
	switch hdr.Typeflag {
	case tar.TypeReg:
		content, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		s += fmt.Sprintf(" %q", content)
	case tar.TypeLink, tar.TypeSymlink:
		s += " -> " + hdr.Linkname
	}
	for _, k := range sortedPAX(hdr.PAXRecords) {
		s += fmt.Sprintf(" %s=%s", strings.TrimPrefix(k, "SCHILY.xattr."), hdr.PAXRecords[k])
	}
	if hdr.ModTime.Unix() != changeTime.Unix() && hdr.ModTime.Unix() != baseTime.Unix() {
		s += " mtime=" + hdr.ModTime.UTC().Format(time.RFC3339)
	}
	return s
}

func sortedPAX(m map[string]string) []string {
	var keys []string
	for k := range m {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func typeName(b byte) string {
	return map[byte]string{
		tar.TypeReg: "file", tar.TypeDir: "dir", tar.TypeSymlink: "symlink", tar.TypeLink: "hardlink",
		tar.TypeFifo: "fifo", tar.TypeChar: "char", tar.TypeBlock: "block",
	}[b]
}

// makeSocket leaves a unix socket at p (layers skip sockets).
func makeSocket(t *testing.T, p string) {
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	must(t, l.Close())
}
