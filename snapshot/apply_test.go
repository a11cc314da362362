package snapshot_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/snapshot"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// axRequireRoot skips a test that needs root (mknod, chown, trusted.*
// xattrs), and fails it when CI=true, where the prerequisite is mandatory.
func axRequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("test needs root (mknod, chown, trusted.* xattrs) and CI=true")
	}
	t.Skip("skipping: test needs root (mknod, chown, trusted.* xattrs)")
}

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

// axTar serialises entries with archive/tar. Headers that archive/tar's
// writer refuses (negative device numbers) are patched in raw form.
func axTar(t testing.TB, ents ...axEnt) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		hdr := e.hdr
		if hdr.Format == tar.FormatUnknown && hdr.PAXRecords == nil {
			hdr.Format = tar.FormatGNU
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
	dir := t.TempDir()
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
	axRequireRoot(t)
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
				n := filepath.Base(w.dir)
				return []axEnt{axReg("foo/tmp/"+n, "first"), axSym("foo", "/"), axReg("foo/tmp/"+n, "second"), axDir("foo/")}
			},
			check: func(t *testing.T, w axWorld) {
				n := filepath.Base(w.dir)
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
			name:  "EXT-16 4 KiB path of short components",
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
