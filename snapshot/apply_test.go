package snapshot_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/builder-dev/builder/snapshot"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/builder-dev/builder/internal/testenv"
)

// axEnt is one tar entry to generate.
type axEnt struct {
	hdr  tar.Header
	body string
}

var axEpoch = time.Unix(1_700_000_000, 0)

func axReg(name, body string) axEnt {
	return axEnt{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: axEpoch}, body: body}
}

func axDir(name string) axEnt {
	return axEnt{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: axEpoch}}
}

func axSym(name, target string) axEnt {
	return axEnt{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: axEpoch}}
}

func axLink(name, target string) axEnt {
	return axEnt{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, ModTime: axEpoch}}
}

func axDev(typ byte, name string, major, minor int64) axEnt {
	return axEnt{hdr: tar.Header{Typeflag: typ, Name: name, Mode: 0o600, Devmajor: major, Devminor: minor, ModTime: axEpoch}}
}

// axTar serialises entries with archive/tar.
func axTar(t testing.TB, ents ...axEnt) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		hdr := e.hdr
		switch hdr.Typeflag {
		case tar.TypeChar, tar.TypeBlock:
			hdr.Format = tar.FormatGNU // base-256 numbers for hostile devices
		case tar.TypeXGlobalHeader:
		default:
			hdr.Format = tar.FormatPAX // sub-second times, xattrs
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatalf("write header %s: %v", hdr.Name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatalf("write body %s: %v", hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("close tar: %v", err)
	}
	return buf.Bytes()
}

// axWorld is a temp directory holding the root "dest", a "victim" tree and
// a "dest-evil" sibling whose name shares the root's prefix.
type axWorld struct {
	dir, root, victim string
}

func axNewWorld(t *testing.T) axWorld {
	t.Helper()
	return axNewWorldIn(t, t.TempDir())
}

// axNewWorldIn makes the world in the existing empty directory dir.
func axNewWorldIn(t testing.TB, dir string) axWorld {
	t.Helper()
	w := axWorld{dir: dir, root: filepath.Join(dir, "dest"), victim: filepath.Join(dir, "victim")}
	for _, d := range []string{w.root, filepath.Join(w.victim, "sub"), filepath.Join(dir, "dest-evil")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"victim/x": "x", "victim/whitedout": "keep me", "victim/sub/y": "y",
		"victim/passwd": "victim passwd", "dest-evil/secret": "secret",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("sub", filepath.Join(w.victim, "link")); err != nil {
		t.Fatal(err)
	}
	return w
}

// axListing describes every path under dir except the root: type, mode,
// owner, size, mtime, content hash and link target.
func (w axWorld) listing(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(w.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == w.root {
			return filepath.SkipDir
		}
		out = append(out, axDescribe(t, w.dir, p))
		return nil
	})
	if err != nil {
		t.Fatalf("list %s: %v", w.dir, err)
	}
	return out
}

func axDescribe(t *testing.T, base, p string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	rel, _ := filepath.Rel(base, p)
	extra := ""
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		extra = hex.EncodeToString(sum[:8])
	case unix.S_IFLNK:
		extra, _ = os.Readlink(p)
	}
	return fmt.Sprintf("%s mode=%o uid=%d gid=%d size=%d mtime=%d.%d %s",
		rel, st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec, extra)
}

// apply runs snapshot.Apply on the world's root.
func (w axWorld) apply(t *testing.T, data []byte, opts ...snapshot.ApplyOption) error {
	t.Helper()
	n, err := snapshot.Apply(context.Background(), w.root, bytes.NewReader(data), opts...)
	if err == nil && n != int64(len(data)) {
		t.Errorf("Apply read %d bytes, want %d", n, len(data))
	}
	return err
}

func axReadFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

func axMissing(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s exists (err=%v), want it absent", p, err)
	}
}

func axSameInode(t *testing.T, a, b string) {
	t.Helper()
	var sa, sb unix.Stat_t
	if err := unix.Lstat(a, &sa); err != nil {
		t.Fatalf("lstat %s: %v", a, err)
	}
	if err := unix.Lstat(b, &sb); err != nil {
		t.Fatalf("lstat %s: %v", b, err)
	}
	if sa.Ino != sb.Ino || sa.Dev != sb.Dev {
		t.Errorf("%s and %s are different inodes", a, b)
	}
}

// axCase is one hostile or legitimate layer applied over a lower layer.
type axCase struct {
	name    string
	lower   []axEnt
	setup   func(t *testing.T, w axWorld) []axEnt // extra lower entries using the world's paths
	layer   func(w axWorld) []axEnt
	opts    []snapshot.ApplyOption
	wantErr string // substring of the error; "" means success
	is      error  // the error must wrap this, when set
	check   func(t *testing.T, w axWorld)
}

func TestApplyReliability(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range axReliabilityCases() {
		t.Run(tc.name, func(t *testing.T) { axRunCase(t, tc) })
	}
}

func axRunCase(t *testing.T, tc axCase) {
	w := axNewWorld(t)
	lower := tc.lower
	if tc.setup != nil {
		lower = append(append([]axEnt{}, lower...), tc.setup(t, w)...)
	}
	if len(lower) > 0 {
		if err := w.apply(t, axTar(t, lower...)); err != nil {
			t.Fatalf("apply lower: %v", err)
		}
	}
	before := w.listing(t)
	err := w.apply(t, axTar(t, tc.layer(w)...), tc.opts...)
	switch {
	case tc.wantErr == "" && err != nil:
		t.Fatalf("Apply: %v", err)
	case tc.wantErr != "" && err == nil:
		t.Fatalf("Apply succeeded, want error containing %q", tc.wantErr)
	case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
		t.Fatalf("Apply error %q, want it to contain %q", err, tc.wantErr)
	case tc.is != nil && !errors.Is(err, tc.is):
		t.Fatalf("Apply error %v, want it to wrap %v", err, tc.is)
	}
	if err != nil {
		t.Logf("error: %v", err)
	}
	if err != nil && len(err.Error()) > 1024 {
		t.Errorf("error message is %d bytes long, want a short one: %.300s...", len(err.Error()), err)
	}
	if diff := cmp.Diff(before, w.listing(t)); diff != "" {
		t.Errorf("files outside the root changed (-before +after):\n%s", diff)
	}
	if tc.check != nil {
		tc.check(t, w)
	}
}

func axStatic(ents ...axEnt) func(axWorld) []axEnt {
	return func(axWorld) []axEnt { return ents }
}

func axReliabilityCases() []axCase {
	var cases []axCase
	cases = append(cases, axBreakoutCases()...)
	cases = append(cases, axSymlinkCases()...)
	cases = append(cases, axWhiteoutCases()...)
	cases = append(cases, axSpecialCases()...)
	return cases
}

// axBreakoutCases: EXT-01 (names climbing out of the root) and EXT-02.
func axBreakoutCases() []axCase {
	var cases []axCase
	for _, name := range []string{"../victim/x", "/../victim/x", "..", "../pwned", "../../pwned", "a/../../victim/x", "./../pwned"} {
		cases = append(cases, axCase{
			name: "EXT-01 name " + name, layer: axStatic(axReg(name, "pwned")),
			wantErr: name, is: snapshot.ErrUnsafePath,
		})
	}
	cases = append(cases,
		axCase{
			name: "EXT-01 dir named ..", layer: axStatic(axDir("../")),
			wantErr: "escapes", is: snapshot.ErrUnsafePath,
		},
		axCase{
			name: "EXT-01 dotdot-ish names are legal", layer: axStatic(axReg("..gitme", "a"), axReg("a/..b/...", "b")),
			check: func(t *testing.T, w axWorld) {
				axReadFile(t, filepath.Join(w.root, "..gitme"))
				axReadFile(t, filepath.Join(w.root, "a/..b/..."))
			},
		},
		axCase{
			name:  "EXT-02 relative symlink then file through it",
			layer: axStatic(axSym("loophole", "../victim"), axReg("loophole/file", "pwned")),
			check: func(t *testing.T, w axWorld) {
				if got := axReadFile(t, filepath.Join(w.root, "victim/file")); got != "pwned" {
					t.Errorf("root/victim/file = %q", got)
				}
			},
		},
		axCase{
			name: "EXT-02 absolute host symlink then file through it",
			layer: func(w axWorld) []axEnt {
				return []axEnt{axSym("loophole", w.victim), axReg("loophole/x", "pwned"), axReg("loophole/sub/y", "pwned")}
			},
			check: func(t *testing.T, w axWorld) {
				axReadFile(t, filepath.Join(w.root, w.victim, "x"))
				axReadFile(t, filepath.Join(w.root, w.victim, "sub/y"))
			},
		},
		axCase{
			name:  "EXT-02 symlink in lower, hardlink and symlink-dir write",
			lower: []axEnt{axSym("up", "../../..")},
			layer: axStatic(axReg("up/victim/x", "pwned"), axDir("up/victim/sub/"), axReg("up/victim/sub/y", "pwned")),
			check: func(t *testing.T, w axWorld) { axReadFile(t, filepath.Join(w.root, "victim/sub/y")) },
		},
	)
	return cases
}

// axSymlinkCases: EXT-05, EXT-07, EXT-09, EXT-16 (loops).
func axSymlinkCases() []axCase {
	ext05 := axStatic(axDir("var/run/act/"), axDir("var/run/act/.git/"),
		axReg("var/run/act/.git/HEAD", "ref: main"), axLink("var/run/act/.git/HEAD.lnk", "var/run/act/.git/HEAD"))
	ext05check := func(t *testing.T, w axWorld) {
		head := filepath.Join(w.root, "run/act/.git/HEAD")
		if got := axReadFile(t, head); got != "ref: main" {
			t.Errorf("HEAD = %q", got)
		}
		axSameInode(t, head, filepath.Join(w.root, "run/act/.git/HEAD.lnk"))
		if target, err := os.Readlink(filepath.Join(w.root, "var/run")); err != nil || target != "/run" {
			t.Errorf("var/run = %q, %v; want the symlink kept", target, err)
		}
	}
	return []axCase{
		{
			name:  "EXT-05 absolute symlink var/run -> /run (target exists)",
			lower: []axEnt{axDir("var/"), axDir("run/"), axSym("var/run", "/run")},
			layer: ext05, check: ext05check,
		},
		{
			name:  "EXT-05 absolute symlink var/run -> /run (dangling)",
			lower: []axEnt{axDir("var/"), axSym("var/run", "/run")},
			layer: ext05, check: ext05check,
		},
		{
			name:  "EXT-07 hardlink through relative symlink",
			lower: []axEnt{axDir("etc/"), axReg("etc/passwd", "root:x:0:0")},
			layer: axStatic(axDir("breakouts/"), axSym("breakouts/d1", "../../etc"),
				axLink("breakouts/mypasswd", "/breakouts/d1/passwd"),
				axSym("breakouts/d2", "../../../../../../../../etc"),
				axLink("breakouts/long", "breakouts/d2/passwd")),
			check: func(t *testing.T, w axWorld) {
				axSameInode(t, filepath.Join(w.root, "etc/passwd"), filepath.Join(w.root, "breakouts/mypasswd"))
				axSameInode(t, filepath.Join(w.root, "etc/passwd"), filepath.Join(w.root, "breakouts/long"))
			},
		},
		{
			name:  "EXT-07 hardlink through absolute host symlink",
			lower: []axEnt{axDir("etc/"), axReg("etc/passwd", "root:x:0:0")},
			layer: func(w axWorld) []axEnt {
				return []axEnt{axSym("hostdir", w.victim), axLink("stolen", "hostdir/passwd")}
			},
			wantErr: "no such file",
			check:   func(t *testing.T, w axWorld) { axMissing(t, filepath.Join(w.root, "stolen")) },
		},
		{
			name: "EXT-07 hardlink to sibling with the root's name prefix", layer: axStatic(axLink("evil", "../dest-evil/secret")),
			wantErr: "escapes", is: snapshot.ErrUnsafePath,
			check: func(t *testing.T, w axWorld) { axMissing(t, filepath.Join(w.root, "evil")) },
		},
		{
			name: "EXT-09 symlink replaces a written path",
			layer: func(w axWorld) []axEnt {
				n := filepath.Base(filepath.Dir(w.dir)) + "-ext09"
				return []axEnt{axReg("foo/tmp/"+n, "first"), axSym("foo", "/"), axReg("foo/tmp/"+n, "second"), axDir("foo/")}
			},
			check: func(t *testing.T, w axWorld) {
				n := filepath.Base(filepath.Dir(w.dir)) + "-ext09"
				axMissing(t, filepath.Join("/tmp", n))
				if got := axReadFile(t, filepath.Join(w.root, "tmp", n)); got != "second" {
					t.Errorf("root/tmp/%s = %q", n, got)
				}
				if fi, err := os.Lstat(filepath.Join(w.root, "foo")); err != nil || !fi.IsDir() {
					t.Errorf("foo is not a directory: %v", err)
				}
			},
		},
		{
			name:    "EXT-16 symlink loop",
			layer:   axStatic(axSym("a", "b"), axSym("b", "a"), axReg("a/x", "x")),
			wantErr: "too many levels of symbolic links",
		},
		{
			name:    "EXT-16 self loop in the middle of a path",
			layer:   axStatic(axSym("l", "l/x"), axReg("l/y/z", "x")),
			wantErr: "entry \"l/y/z\"",
		},
		{
			name:    "EXT-16 255-byte component plus one",
			layer:   axStatic(axReg(strings.Repeat("n", 256), "x")),
			wantErr: "file name too long",
		},
		{
			name:    "EXT-16 4 KiB path of short components",
			layer:   axStatic(axReg(strings.Repeat("d/", 2100)+"f", "x")),
			wantErr: "file name too long",
		},
	}
}

// axWhiteoutCases: EXT-11 and EXT-12, plus the plain whiteout.
func axWhiteoutCases() []axCase {
	lowerEtc := []axEnt{axDir("etc/"), axReg("etc/whitedout", "w"), axReg("etc/keep", "k"), axSym("localetc", "/etc")}
	return []axCase{
		{
			name: "whiteout file and dir tree", lower: []axEnt{axReg("gone", "x"), axReg("d/a/b", "x"), axReg("stay", "x")},
			layer: axStatic(axReg(".wh.gone", ""), axReg(".wh.d", ""), axReg(".wh.nonexistent", ""), axReg("x/.wh.y", "")),
			check: func(t *testing.T, w axWorld) {
				axMissing(t, filepath.Join(w.root, "gone"))
				axMissing(t, filepath.Join(w.root, "d"))
				axMissing(t, filepath.Join(w.root, ".wh.gone"))
				axMissing(t, filepath.Join(w.root, "x"))
				axReadFile(t, filepath.Join(w.root, "stay"))
			},
		},
		{
			name: "EXT-11 whiteout of a symlink removes only the link", lower: lowerEtc,
			layer: axStatic(axReg(".wh.localetc", "")),
			check: func(t *testing.T, w axWorld) {
				axMissing(t, filepath.Join(w.root, "localetc"))
				axReadFile(t, filepath.Join(w.root, "etc/whitedout"))
			},
		},
		{
			name: "EXT-11 whiteout through a symlink stays in the root", lower: lowerEtc,
			layer: axStatic(axReg("localetc/.wh.whitedout", "")),
			check: func(t *testing.T, w axWorld) {
				axMissing(t, filepath.Join(w.root, "etc/whitedout"))
				axReadFile(t, filepath.Join(w.root, "etc/keep"))
			},
		},
		{
			name: "EXT-11 whiteout through an absolute host symlink",
			setup: func(t *testing.T, w axWorld) []axEnt {
				return []axEnt{axSym("hostlink", w.victim)}
			},
			layer: axStatic(axReg("hostlink/.wh.whitedout", ""), axReg("hostlink/.wh.sub", "")),
		},
		{
			name: "EXT-12 opaque directory", lower: []axEnt{axReg("foo/a", "a"), axReg("foo/b/c", "c"), axReg("other/z", "z")},
			layer: axStatic(axReg("foo/-early", "e"), axReg("foo/b/new", "n"), axDir("foo/"), axReg("foo/.wh..wh..opq", ""), axReg("foo/x", "x")),
			check: func(t *testing.T, w axWorld) {
				for _, p := range []string{"foo/x", "foo/-early", "foo/b/new", "other/z"} {
					axReadFile(t, filepath.Join(w.root, p))
				}
				for _, p := range []string{"foo/a", "foo/b/c", "foo/.wh..wh..opq"} {
					axMissing(t, filepath.Join(w.root, p))
				}
			},
		},
		{
			name:  "EXT-12 directory named .wh.etc is a regular path",
			layer: axStatic(axDir(".wh.etc/"), axReg(".wh.etc/somefile", "s"), axReg(".wh.dironly/f", "f")),
			check: func(t *testing.T, w axWorld) {
				axReadFile(t, filepath.Join(w.root, ".wh.etc/somefile"))
				axReadFile(t, filepath.Join(w.root, ".wh.dironly/f"))
			},
		},
		{
			name:    "invalid whiteout .wh...",
			layer:   axStatic(axReg(".wh...", "")),
			wantErr: "invalid whiteout",
		},
		{
			name: "aufs metadata is skipped", layer: axStatic(axReg(".wh..wh.plnk/123", "x"), axReg("f", "f")),
			check: func(t *testing.T, w axWorld) { axMissing(t, filepath.Join(w.root, ".wh..wh.plnk")) },
		},
	}
}

// axSpecialCases: EXT-13 devices, replacement rules.
func axSpecialCases() []axCase {
	return []axCase{
		{name: "EXT-13 negative major", layer: axStatic(axDev(tar.TypeChar, "dev/bad", -1, 0)), wantErr: "invalid device number"},
		{name: "EXT-13 major beyond uint32", layer: axStatic(axDev(tar.TypeBlock, "dev/bad", 1<<33, 0)), wantErr: "invalid device number"},
		{name: "EXT-13 minor beyond uint32", layer: axStatic(axDev(tar.TypeChar, "dev/bad", 1, 1<<40)), wantErr: "invalid device number"},
		{
			name: "EXT-13 valid devices", layer: axStatic(axDev(tar.TypeChar, "dev/null", 1, 3), axDev(tar.TypeBlock, "dev/loopx", 7, 200)),
			check: func(t *testing.T, w axWorld) {
				axCheckDev(t, filepath.Join(w.root, "dev/null"), unix.S_IFCHR, 1, 3)
				axCheckDev(t, filepath.Join(w.root, "dev/loopx"), unix.S_IFBLK, 7, 200)
			},
		},
		{
			name: "file replaces dir tree, dir keeps dir, dir replaces symlink",
			lower: []axEnt{axReg("d/inner", "x"), axDir("keep/"), axReg("keep/old", "o"), axSym("s", "/etc"),
				axReg("f", "old")},
			layer: axStatic(axReg("d", "now a file"), axEnt{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "keep", Mode: 0o700, ModTime: axEpoch}},
				axDir("s/"), axReg("f", "new")),
			check: func(t *testing.T, w axWorld) {
				if got := axReadFile(t, filepath.Join(w.root, "d")); got != "now a file" {
					t.Errorf("d = %q", got)
				}
				axReadFile(t, filepath.Join(w.root, "keep/old"))
				if fi, err := os.Stat(filepath.Join(w.root, "keep")); err != nil || fi.Mode().Perm() != 0o700 {
					t.Errorf("keep mode = %v, %v; want 0700", fi, err)
				}
				if fi, err := os.Lstat(filepath.Join(w.root, "s")); err != nil || !fi.IsDir() {
					t.Errorf("s is not a directory: %v", err)
				}
				if got := axReadFile(t, filepath.Join(w.root, "f")); got != "new" {
					t.Errorf("f = %q", got)
				}
			},
		},
		{
			name:  "regular file over a symlink to a host file",
			setup: func(t *testing.T, w axWorld) []axEnt { return []axEnt{axSym("p", filepath.Join(w.victim, "passwd"))} },
			layer: axStatic(axReg("p", "replaced")),
			check: func(t *testing.T, w axWorld) {
				if got := axReadFile(t, filepath.Join(w.root, "p")); got != "replaced" {
					t.Errorf("p = %q", got)
				}
			},
		},
		{
			name: "hardlink to missing target", layer: axStatic(axLink("l", "nope")),
			wantErr: "hardlink to \"nope\"",
		},
		{
			name: "unsupported entry type", layer: axStatic(axEnt{hdr: tar.Header{Typeflag: 'V', Name: "vol", ModTime: axEpoch}}),
			wantErr: "unsupported tar entry type",
		},
	}
}

func axCheckDev(t *testing.T, p string, kind uint32, major, minor uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	if st.Mode&unix.S_IFMT != kind || unix.Major(st.Rdev) != major || unix.Minor(st.Rdev) != minor {
		t.Errorf("%s: mode %o rdev %d:%d, want type %o %d:%d", p, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), kind, major, minor)
	}
}

func axWithMeta(e axEnt, mode int64, uid, gid int, xattrs map[string]string) axEnt {
	e.hdr.Mode, e.hdr.Uid, e.hdr.Gid = mode, uid, gid
	e.hdr.ModTime = time.Unix(1_600_000_000, 123_456_789)
	if len(xattrs) > 0 {
		e.hdr.PAXRecords = map[string]string{}
		for k, v := range xattrs {
			e.hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	return e
}

// axWant is the expected state of one extracted path.
type axWant struct {
	name     string
	mode     uint32 // including the file type
	uid, gid uint32
	xattrs   map[string]string
}

func TestApplyMetadataRoundTrip(t *testing.T) {
	testenv.RequireRoot(t)
	caps := snapshot.CapXattrForTest()
	ents := []axEnt{
		axWithMeta(axDir("sticky/"), 0o1777, 0, 0, nil),
		axWithMeta(axDir("sgid/"), 0o2755, 0, 50, nil),
		axWithMeta(axReg("sgid/suid", "#!"), 0o4755, 1000, 1000, nil),
		axWithMeta(axReg("ping", "elf"), 0o755, 0, 0, map[string]string{"security.capability": caps, "user.note": "hi"}),
		axWithMeta(axReg("nobody", "n"), 0o600, 65534, 65534, nil),
		axWithMeta(axEnt{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo"}}, 0o640, 7, 8, nil),
		axWithMeta(axSym("link", "ping"), 0o777, 1000, 1001, nil),
		// A link's header describes the inode it shares, as writers make it.
		axWithMeta(axLink("ping.hard", "ping"), 0o755, 0, 0, map[string]string{"security.capability": caps, "user.note": "hi"}),
	}
	wants := []axWant{
		{"sticky", unix.S_IFDIR | 0o1777, 0, 0, nil},
		{"sgid", unix.S_IFDIR | 0o2755, 0, 50, nil},
		{"sgid/suid", unix.S_IFREG | 0o4755, 1000, 1000, nil},
		{"ping", unix.S_IFREG | 0o755, 0, 0, map[string]string{"security.capability": caps, "user.note": "hi"}},
		{"nobody", unix.S_IFREG | 0o600, 65534, 65534, nil},
		{"fifo", unix.S_IFIFO | 0o640, 7, 8, nil},
		{"link", unix.S_IFLNK | 0o777, 1000, 1001, nil},
	}
	w := axNewWorld(t)
	if err := w.apply(t, axTar(t, ents...)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for _, want := range wants {
		axCheckMeta(t, filepath.Join(w.root, want.name), want)
	}
	axSameInode(t, filepath.Join(w.root, "ping"), filepath.Join(w.root, "ping.hard"))
}

// TestApplyHardlinkHeaderWins: a hardlink entry's owner, mode, xattrs and
// time apply to the file it shares, as containerd's and moby's unpackers
// (BuildKit's ADD and layer unpack) apply them; a link to a symlink leaves
// the symlink as it is.
func TestApplyHardlinkHeaderWins(t *testing.T) {
	testenv.RequireRoot(t)
	ents := []axEnt{
		axWithMeta(axReg("f", "data"), 0o644, 7, 8, map[string]string{"user.a": "1"}),
		axWithMeta(axLink("h", "f"), 0o4750, 9, 10, map[string]string{"user.b": "2"}),
		axWithMeta(axSym("s", "f"), 0o777, 3, 4, nil),
		axWithMeta(axLink("hs", "s"), 0o600, 5, 6, nil),
	}
	ents[1].hdr.ModTime = time.Unix(1_700_000_000, 0)
	w := axNewWorld(t)
	if err := w.apply(t, axTar(t, ents...)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(w.root, "f"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != unix.S_IFREG|0o4750 || st.Uid != 9 || st.Gid != 10 || st.Mtim.Sec != 1_700_000_000 {
		t.Errorf("f: mode %o owner %d:%d mtime %d, want the link's: mode %o owner 9:10 mtime 1700000000",
			st.Mode, st.Uid, st.Gid, st.Mtim.Sec, unix.S_IFREG|0o4750)
	}
	for name, want := range map[string]string{"user.a": "1", "user.b": "2"} {
		buf := make([]byte, 16)
		n, err := unix.Lgetxattr(filepath.Join(w.root, "f"), name, buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("f: xattr %s = %q, %v; want %q", name, buf[:max(n, 0)], err, want)
		}
	}
	axSameInode(t, filepath.Join(w.root, "f"), filepath.Join(w.root, "h"))
	if err := unix.Lstat(filepath.Join(w.root, "s"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Uid != 3 || st.Gid != 4 {
		t.Errorf("s: mode %o owner %d:%d, want a symlink owned by 3:4", st.Mode, st.Uid, st.Gid)
	}
}

func axCheckMeta(t *testing.T, p string, want axWant) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	if st.Mode != want.mode || st.Uid != want.uid || st.Gid != want.gid {
		t.Errorf("%s: mode %o owner %d:%d, want mode %o owner %d:%d", want.name, st.Mode, st.Uid, st.Gid, want.mode, want.uid, want.gid)
	}
	wantTime := time.Unix(1_600_000_000, 123_456_789)
	if got := time.Unix(st.Mtim.Sec, st.Mtim.Nsec); !got.Equal(wantTime) {
		t.Errorf("%s: mtime %v, want %v", want.name, got, wantTime)
	}
	for k, v := range want.xattrs {
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(p, k, buf)
		if err != nil || string(buf[:n]) != v {
			t.Errorf("%s: xattr %s = %q, %v; want %q", want.name, k, buf[:max(n, 0)], err, v)
		}
	}
}

func TestApplyOverlayWhiteouts(t *testing.T) {
	testenv.RequireRoot(t)
	w := axNewWorld(t)
	if err := os.WriteFile(filepath.Join(w.root, "gone"), []byte("lower"), 0o644); err != nil {
		t.Fatal(err)
	}
	var warnings []string
	opaqueDir := axWithMeta(axDir("d/"), 0o755, 0, 0, map[string]string{"trusted.overlay.redirect": "/etc"})
	data := axTar(t, opaqueDir, axReg("d/.wh..wh..opq", ""), axReg("d/x", "x"), axReg(".wh.gone", ""), axReg("e/.wh.f", ""))
	err := w.apply(t, data, snapshot.WithOverlayWhiteouts(), snapshot.WithWarn(func(m string) { warnings = append(warnings, m) }))
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(w.root, "d"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("d: trusted.overlay.opaque = %q, %v; want y", buf[:max(n, 0)], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(w.root, "d"), "trusted.overlay.redirect", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("d: trusted.overlay.redirect from the tar was set (err=%v)", err)
	}
	axReadFile(t, filepath.Join(w.root, "d/x"))
	axCheckDev(t, filepath.Join(w.root, "gone"), unix.S_IFCHR, 0, 0)
	axCheckDev(t, filepath.Join(w.root, "e/f"), unix.S_IFCHR, 0, 0)
	for _, p := range []string{".wh.gone", "d/.wh..wh..opq", "e/.wh.f"} {
		axMissing(t, filepath.Join(w.root, p))
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "trusted.overlay.redirect") {
		t.Errorf("warnings = %q, want one about trusted.overlay.redirect", warnings)
	}
}

func TestApplyNoWhiteouts(t *testing.T) {
	testenv.RequireRoot(t)
	w := axNewWorld(t)
	if err := os.WriteFile(filepath.Join(w.root, "foo"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	data := axTar(t, axReg(".wh.foo", "plain"), axReg("d/.wh..wh..opq", "marker"), axReg(".wh..wh.plnk", "aufs"))
	if err := w.apply(t, data, snapshot.WithNoWhiteouts()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for name, want := range map[string]string{"foo": "kept", ".wh.foo": "plain", "d/.wh..wh..opq": "marker", ".wh..wh.plnk": "aufs"} {
		if got := axReadFile(t, filepath.Join(w.root, name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

func TestApplyOwnershipOptions(t *testing.T) {
	testenv.RequireRoot(t)
	data := axTar(t, axWithMeta(axReg("f", "x"), 0o644, 1000, 1000, nil), axWithMeta(axDir("d/"), 0o755, 12, 34, nil),
		axWithMeta(axSym("s", "f"), 0o777, 5, 6, nil))
	for _, tc := range []struct {
		name     string
		opt      snapshot.ApplyOption
		uid, gid uint32
	}{
		{"chown", snapshot.WithChown(1234, 5678), 1234, 5678},
		{"no same owner", snapshot.WithNoSameOwner(), uint32(os.Geteuid()), uint32(os.Getegid())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := axNewWorld(t)
			if err := w.apply(t, data, tc.opt); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			for _, name := range []string{"f", "d", "s"} {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(w.root, name), &st); err != nil {
					t.Fatal(err)
				}
				if st.Uid != tc.uid || st.Gid != tc.gid {
					t.Errorf("%s owned by %d:%d, want %d:%d", name, st.Uid, st.Gid, tc.uid, tc.gid)
				}
			}
		})
	}
}

func TestApplyDirTimesAfterContent(t *testing.T) {
	testenv.RequireRoot(t)
	w := axNewWorld(t)
	dirTime := time.Unix(1_000_000_000, 0)
	d := axDir("d/")
	d.hdr.ModTime = dirTime
	if err := w.apply(t, axTar(t, d, axReg("d/f", "x"), axDir("d/sub/"), axReg("d/sub/g", "y"))); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	fi, err := os.Stat(filepath.Join(w.root, "d"))
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(dirTime) {
		t.Errorf("d mtime %v, want %v", fi.ModTime(), dirTime)
	}
}

// TestApplyTimesBounded: an entry dated before 1970 or after 2262 (what
// nanoseconds since the epoch hold in an int64) is extracted dated
// 1970-01-01, a file, a directory and a symlink alike, as containerd's
// archive.Apply extracts it (BuildKit's ADD and image unpacking; checked
// against buildkitd v0.34.2); the last representable second is kept.
func TestApplyTimesBounded(t *testing.T) {
	testenv.RequireRoot(t)
	w := axNewWorld(t)
	dated := func(e axEnt, sec int64) axEnt {
		e.hdr.ModTime = time.Unix(sec, 0)
		e.hdr.Format = tar.FormatPAX
		return e
	}
	last := int64(math.MaxInt64 / int64(time.Second))
	if err := w.apply(t, axTar(t, dated(axReg("neg", "n"), -100), dated(axReg("far", "f"), 32503680000),
		dated(axDir("negdir/"), -5), dated(axSym("neglink", "neg"), -7), dated(axReg("last", "l"), last))); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for name, want := range map[string]int64{"neg": 0, "far": 0, "negdir": 0, "neglink": 0, "last": last} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(w.root, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mtim.Sec != want {
			t.Errorf("%s: mtime %d, want %d", name, st.Mtim.Sec, want)
		}
	}
}

// TestApplyRootEntryIgnored: an entry for the root itself ("./", ".", a
// name that climbs back to it), of any type, leaves the root's owner, mode
// and times as they were, as containerd's and moby's unpackers skip it.
func TestApplyRootEntryIgnored(t *testing.T) {
	testenv.RequireRoot(t)
	old := time.Unix(1_000_000_000, 0)
	for _, tc := range []struct {
		name  string
		entry axEnt
		opts  []snapshot.ApplyOption
	}{
		{"./", axWithMeta(axDir("./"), 0o700, 5, 6, nil), nil},
		{".", axWithMeta(axDir("."), 0o751, 0, 0, nil), nil},
		{"d/..", axWithMeta(axDir("d/../"), 0o711, 7, 7, nil), nil},
		{"a file", axReg(".", "x"), nil},
		{"ADD: ./", axWithMeta(axDir("./"), 0o700, 5, 6, nil), []snapshot.ApplyOption{snapshot.WithChrootNames()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := axNewWorld(t)
			if err := os.Chmod(w.root, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(w.root, old, old); err != nil {
				t.Fatal(err)
			}
			tc.entry.hdr.ModTime = time.Unix(2_000_000_000, 0)
			if err := w.apply(t, axTar(t, tc.entry), tc.opts...); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			var st unix.Stat_t
			if err := unix.Stat(w.root, &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode != unix.S_IFDIR|0o755 || st.Uid != 0 || st.Gid != 0 || st.Mtim.Sec != old.Unix() {
				t.Errorf("root mode %o, owner %d:%d, mtime %d; want it unchanged (%o, 0:0, %d)", st.Mode, st.Uid, st.Gid, st.Mtim.Sec, unix.S_IFDIR|0o755, old.Unix())
			}
		})
	}
}

func TestApplyLimits(t *testing.T) {
	w := axNewWorld(t)
	big := axReg("big", strings.Repeat("z", 2<<20))
	err := w.apply(t, axTar(t, big), snapshot.WithNoSameOwner(), snapshot.WithLimits(1<<20, 0))
	if !errors.Is(err, snapshot.ErrApplyLimit) {
		t.Errorf("2 MiB file with a 1 MiB limit: err = %v, want ErrApplyLimit", err)
	}
	var many []axEnt
	for i := range 1500 {
		many = append(many, axReg(fmt.Sprintf("f%04d", i), ""))
	}
	err = w.apply(t, axTar(t, many...), snapshot.WithNoSameOwner(), snapshot.WithLimits(0, 1000))
	if !errors.Is(err, snapshot.ErrApplyLimit) || !strings.Contains(err.Error(), "1000 entries") {
		t.Errorf("1500 entries with a limit of 1000: err = %v, want ErrApplyLimit", err)
	}
}

// TestApplyGzipBomb: a few hundred KiB of gzip expanding to 256 MiB stops
// at the limit, and the disk use stays near it (EXT-16).
func TestApplyGzipBomb(t *testing.T) {
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	tw := tar.NewWriter(zw)
	const size = 256 << 20
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bomb", Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(tw, axZeros{}, size); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		t.Fatal(err)
	}
	w := axNewWorld(t)
	rc, c, err := snapshot.Decompress(bytes.NewReader(zbuf.Bytes()))
	if err != nil || c != snapshot.Gzip {
		t.Fatalf("Decompress: %v, %v", c, err)
	}
	defer rc.Close()
	const limit = 8 << 20
	n, err := snapshot.Apply(context.Background(), w.root, rc, snapshot.WithNoSameOwner(), snapshot.WithLimits(limit, 0))
	if !errors.Is(err, snapshot.ErrApplyLimit) {
		t.Fatalf("Apply: %v, want ErrApplyLimit", err)
	}
	if n > limit {
		t.Errorf("read %d bytes, more than the %d limit", n, limit)
	}
	var used int64
	_ = filepath.WalkDir(w.root, func(p string, d fs.DirEntry, err error) error {
		if fi, ierr := os.Lstat(p); ierr == nil {
			used += fi.Size()
		}
		return nil
	})
	if used > limit+64<<10 {
		t.Errorf("root holds %d bytes after the bomb, want at most about %d", used, limit)
	}
}

type axZeros struct{}

func (axZeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestApplyMalformed: EXT-17 inputs give errors, never panics; a PAX
// global header is ignored.
func TestApplyMalformed(t *testing.T) {
	good := axTar(t, axReg("a", strings.Repeat("a", 3000)), axReg("b", "b"))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(good)
	_ = zw.Close()
	random := make([]byte, 4096)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	for _, tc := range []struct {
		name, wantErr string
		data          []byte
	}{
		{"truncated tar in content", "unexpected EOF", good[:1200]},
		{"truncated tar in header", "unexpected EOF", good[:100]},
		{"truncated gzip", "unexpected EOF", gz.Bytes()[:gz.Len()/2]},
		{"random bytes", "read tar", random},
		{"corrupt checksum", "invalid tar header", append([]byte{'x'}, good[1:]...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := axNewWorld(t)
			rc, _, err := snapshot.Decompress(bytes.NewReader(tc.data))
			if err == nil {
				defer rc.Close()
				_, err = snapshot.Apply(context.Background(), w.root, rc, snapshot.WithNoSameOwner())
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	t.Run("pax global header", func(t *testing.T) {
		w := axNewWorld(t)
		g := axEnt{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "x"}}}
		if err := w.apply(t, axTar(t, g, axReg("f", "f")), snapshot.WithNoSameOwner()); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		axMissing(t, filepath.Join(w.root, "pax_global_header"))
		axReadFile(t, filepath.Join(w.root, "f"))
	})
}

func TestApplyCountsWholeStream(t *testing.T) {
	w := axNewWorld(t)
	data := append(axTar(t, axReg("f", "x")), make([]byte, 10240)...)
	n, err := snapshot.Apply(context.Background(), w.root, bytes.NewReader(data), snapshot.WithNoSameOwner())
	if err != nil || n != int64(len(data)) {
		t.Errorf("Apply = %d, %v; want %d bytes", n, err, len(data))
	}
	n, err = snapshot.Apply(context.Background(), w.root, bytes.NewReader(nil))
	if err != nil || n != 0 {
		t.Errorf("Apply of an empty stream = %d, %v; want 0, nil", n, err)
	}
}

func TestApplyCancelled(t *testing.T) {
	w := axNewWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := snapshot.Apply(ctx, w.root, bytes.NewReader(axTar(t, axReg("f", "x"))), snapshot.WithNoSameOwner())
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	axMissing(t, filepath.Join(w.root, "f"))
}

func TestApplyMissingRoot(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	_, err := snapshot.Apply(context.Background(), missing, bytes.NewReader(nil))
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("err = %v, want one naming %s", err, missing)
	}
}

// TestApplyDevicesInUserNS: in a user namespace mknod of a device fails
// with EPERM; Apply writes an empty regular file recording the device in
// the user.builder.override xattr, which the layer tar is made from
// (override_test.go checks the round trip). The test re-runs itself in a
// new user namespace mapping root to root.
func TestApplyDevicesInUserNS(t *testing.T) {
	if os.Getenv("AX_USERNS_CHILD") == "1" {
		axUserNSChild(t)
		return
	}
	testenv.RequireRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestApplyDevicesInUserNS$", "-test.v")
	cmd.Env = append(os.Environ(), "AX_USERNS_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("start test in a user namespace: %v", err)
		}
		t.Skipf("skipping: cannot create a user namespace: %v", err)
	}
	if err != nil || !strings.Contains(string(out), "--- PASS: TestApplyDevicesInUserNS") {
		t.Fatalf("child in user namespace: %v\n%s", err, out)
	}
}

func axUserNSChild(t *testing.T) {
	w := axNewWorld(t)
	var warnings []string
	data := axTar(t, axDev(tar.TypeChar, "dev/null", 1, 3), axDev(tar.TypeBlock, "dev/sda", 8, 0), axReg("f", "x"))
	err := w.apply(t, data, snapshot.WithWarn(func(m string) { warnings = append(warnings, m) }))
	if err != nil {
		t.Fatalf("Apply in a user namespace: %v", err)
	}
	for name, want := range map[string]string{"dev/null": "c 1:3", "dev/sda": "b 8:0"} {
		p := filepath.Join(w.root, name)
		if got := axReadFile(t, p); got != "" {
			t.Errorf("stand-in %s holds %q", name, got)
		}
		buf := make([]byte, 64)
		n, err := unix.Lgetxattr(p, "user.builder.override", buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("stand-in %s records %q (%v), want %q", name, buf[:max(n, 0)], err, want)
		}
	}
	axReadFile(t, filepath.Join(w.root, "f"))
	if len(warnings) != 0 {
		t.Errorf("warnings = %q, want none", warnings)
	}
	bad := axTar(t, axDev(tar.TypeChar, "dev/bad", -1, 0))
	if err := w.apply(t, bad); err == nil || !strings.Contains(err.Error(), "invalid device number") {
		t.Errorf("invalid device in a user namespace: err = %v, want invalid device number", err)
	}
}
