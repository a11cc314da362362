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
	"time"

	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/klauspost/compress/zstd"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// copyRequireRoot skips a test that needs root (chown), or fails under CI.
func copyRequireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("test requires root (CI=true)")
	}
	t.Skip("test requires root")
}

var copyMtime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// copyMakeTree creates entries under root: "name" → file content, "name/"
// → dir, "->target" → symlink, "=other" → hardlink; mode per path via modes.
func copyMakeTree(t *testing.T, root string, spec map[string]string, modes map[string]os.FileMode) {
	t.Helper()
	var links [][2]string
	for p, v := range spec {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(p, "/"):
			err := os.MkdirAll(full, 0o755)
			copyCheck(t, err)
		case strings.HasPrefix(v, "->"):
			copyCheck(t, os.Symlink(v[2:], full))
		case strings.HasPrefix(v, "="):
			links = append(links, [2]string{filepath.Join(root, v[1:]), full})
		default:
			copyCheck(t, os.WriteFile(full, []byte(v), 0o644))
		}
	}
	for _, l := range links {
		copyCheck(t, os.Link(l[0], l[1]))
	}
	for p, m := range modes {
		copyCheck(t, os.Chmod(filepath.Join(root, p), m))
	}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.Mode()&os.ModeSymlink != 0 {
			return err
		}
		return os.Chtimes(p, copyMtime, copyMtime)
	})
	copyCheck(t, err)
}

func copyCheck(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// copyWant is the expected state of one path in the rootfs.
type copyWant struct {
	typ      string // "file", "dir", "symlink", "char", "absent"
	mode     uint32 // permission + special bits; 0 = don't check
	uid, gid int
	content  string
	link     string
	mtime    bool // check mtime == copyMtime
}

func copyVerify(t *testing.T, rootfs string, want map[string]copyWant) {
	t.Helper()
	for p, w := range want {
		full := filepath.Join(rootfs, p)
		fi, err := os.Lstat(full)
		if w.typ == "absent" {
			if err == nil {
				t.Errorf("%s: exists, want absent", p)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		typ := map[uint32]string{syscall.S_IFREG: "file", syscall.S_IFDIR: "dir", syscall.S_IFLNK: "symlink", syscall.S_IFCHR: "char"}[st.Mode&syscall.S_IFMT]
		if typ != w.typ {
			t.Errorf("%s: type %q, want %q", p, typ, w.typ)
			continue
		}
		if w.mode != 0 && st.Mode&0o7777 != w.mode {
			t.Errorf("%s: mode %o, want %o", p, st.Mode&0o7777, w.mode)
		}
		if int(st.Uid) != w.uid || int(st.Gid) != w.gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, st.Uid, st.Gid, w.uid, w.gid)
		}
		if w.mtime && !fi.ModTime().Equal(copyMtime) {
			t.Errorf("%s: mtime %v, want %v", p, fi.ModTime(), copyMtime)
		}
		switch typ {
		case "file":
			b, _ := os.ReadFile(full)
			if string(b) != w.content {
				t.Errorf("%s: content %q, want %q", p, b, w.content)
			}
		case "symlink":
			if l, _ := os.Readlink(full); l != w.link {
				t.Errorf("%s: link %q, want %q", p, l, w.link)
			}
		}
	}
}

var copyContext = map[string]string{
	"a.txt":           "aaa",
	"b.txt":           "bbb",
	"..gitme":         "dots",
	"suid":            "setuid binary",
	"sub/f":           "fff",
	"sub/deep/h":      "hhh",
	"sub/lnk":         "->f",
	"sub/hl":          "=sub/f",
	"sub/empty/":      "",
	"sub/esc":         "->../../victim/secret",
	"link-in":         "->a.txt",
	"escape":          "->../victim/secret",
	"ignored.txt":     "ignored",
	"x.tar.gz":        "not really a tarball",
	"Dockerfile":      "FROM scratch\n",
	"sp ace ü/f.txt":  "unicode",
	"globdir/one.go":  "1",
	"globdir/two.go":  "2",
	"globdir/skip.md": "md",
}

var copyRootfs = map[string]string{
	"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
	"etc/group":    "root:x:0:\nappgrp:x:1001:\n",
	"run/":         "",
	"var/run":      "->/run",
	"existing/":    "",
	"evil":         "->../victim",
	"oldfile":      "old",
	"oldlink":      "->/etc/passwd",
	"w/":           "",
	"hostetc-link": "->/etc",
}

// copySetup makes victim, context and rootfs dirs side by side.
func copySetup(t *testing.T) (ctxDir, rootfs, victim string) {
	t.Helper()
	base := t.TempDir()
	ctxDir, rootfs, victim = filepath.Join(base, "ctx"), filepath.Join(base, "rootfs"), filepath.Join(base, "victim")
	copyMakeTree(t, victim, map[string]string{"secret": "host secret"}, nil)
	copyMakeTree(t, ctxDir, copyContext, map[string]os.FileMode{"suid": 0o755 | os.ModeSetuid | os.ModeSetgid})
	copyMakeTree(t, rootfs, copyRootfs, nil)
	return ctxDir, rootfs, victim
}

func copyRun(t *testing.T, req copyRequest, ctxDir, rootfs string) error {
	t.Helper()
	if req.Context == nil && req.SrcRoot == "" {
		c, err := buildcontext.Open(ctxDir, []string{"ignored.txt"})
		copyCheck(t, err)
		req.Context = c
	}
	if req.TempDir == "" {
		req.TempDir = t.TempDir()
	}
	p, err := copyPrepare(t.Context(), req)
	if err != nil {
		return err
	}
	defer p.Close()
	return p.Apply(t.Context(), rootfs)
}

func TestCopy(t *testing.T) {
	copyRequireRoot(t)
	t.Parallel()
	tests := []struct {
		name    string
		req     copyRequest
		want    map[string]copyWant
		wantErr string
	}{
		{name: "file to file", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/new/b.txt"},
			want: map[string]copyWant{"new": {typ: "dir", mode: 0o755}, "new/b.txt": {typ: "file", mode: 0o644, content: "aaa", mtime: true}}},
		{name: "file to dir slash", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/d/"},
			want: map[string]copyWant{"d/a.txt": {typ: "file", mode: 0o644, content: "aaa"}}},
		{name: "file to existing dir", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/existing"},
			want: map[string]copyWant{"existing/a.txt": {typ: "file", content: "aaa"}}},
		{name: "dir copies contents", req: copyRequest{Sources: []string{"sub"}, Dest: "/app"},
			want: map[string]copyWant{
				"app": {typ: "dir", mode: 0o755, mtime: true}, "app/f": {typ: "file", content: "fff", mtime: true},
				"app/deep/h": {typ: "file", content: "hhh"}, "app/deep": {typ: "dir", mtime: true},
				"app/lnk": {typ: "symlink", link: "f"}, "app/empty": {typ: "dir"}, "app/hl": {typ: "file", content: "fff"},
				"app/esc": {typ: "symlink", link: "../../victim/secret"}, "sub": {typ: "absent"},
			}},
		{name: "multiple sources need dir", req: copyRequest{Sources: []string{"a.txt", "b.txt"}, Dest: "/nodir"},
			wantErr: "When using COPY with more than one source file, the destination must be a directory and end with a /"},
		{name: "multiple sources into existing dir", req: copyRequest{Sources: []string{"a.txt", "b.txt"}, Dest: "/existing"},
			want: map[string]copyWant{"existing/a.txt": {typ: "file", content: "aaa"}, "existing/b.txt": {typ: "file", content: "bbb"}}},
		{name: "glob several matches need dir", req: copyRequest{Sources: []string{"*.txt"}, Dest: "/nodir"},
			wantErr: "destination must be a directory"},
		{name: "glob", req: copyRequest{Sources: []string{"globdir/*.go"}, Dest: "/g/"},
			want: map[string]copyWant{"g/one.go": {typ: "file", content: "1"}, "g/two.go": {typ: "file", content: "2"}, "g/skip.md": {typ: "absent"}}},
		// BuildKit AllowEmptyWildcard: an empty glob is no error, alone or not.
		{name: "empty glob alone", req: copyRequest{Sources: []string{"nomatch*"}, Dest: "/e/"},
			want: map[string]copyWant{"e": {typ: "absent"}}},
		{name: "empty glob beside file", req: copyRequest{Sources: []string{"a.txt", "nomatch*"}, Dest: "/e/"},
			want: map[string]copyWant{"e/a.txt": {typ: "file", content: "aaa"}}},
		{name: "missing file", req: copyRequest{Sources: []string{"badfile"}, Dest: "/"}, wantErr: `"/badfile": not found`},
		{name: "ignored file is absent", req: copyRequest{Sources: []string{"ignored.txt"}, Dest: "/"}, wantErr: `"/ignored.txt": not found`},
		{name: "url in COPY", req: copyRequest{Sources: []string{"https://example.com/x"}, Dest: "/"}, wantErr: "source can't be a URL for COPY"},
		{name: "chmod 999", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/", Chmod: "999"}, wantErr: "invalid chmod parameter: '999'"},
		{name: "chmod abc", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/", Chmod: "abc"}, wantErr: "invalid chmod parameter: 'abc'"},
		{name: "chmod", req: copyRequest{Sources: []string{"sub"}, Dest: "/cm", Chmod: "4710"},
			want: map[string]copyWant{"cm": {typ: "dir", mode: 0o4710}, "cm/f": {typ: "file", mode: 0o4710, content: "fff"}, "cm/lnk": {typ: "symlink", link: "f"}}},
		{name: "chown numeric", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/o/p/", Chown: "1234"},
			want: map[string]copyWant{"o": {typ: "dir", mode: 0o755, uid: 1234, gid: 1234}, "o/p/a.txt": {typ: "file", uid: 1234, gid: 1234, content: "aaa"}}},
		{name: "chown name primary group", req: copyRequest{Sources: []string{"sub"}, Dest: "/o", Chown: "app"},
			want: map[string]copyWant{"o": {typ: "dir", uid: 1000, gid: 1001}, "o/lnk": {typ: "symlink", link: "f", uid: 1000, gid: 1001}}},
		{name: "chown name:group", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/x", Chown: "app:root"},
			want: map[string]copyWant{"x": {typ: "file", uid: 1000, gid: 0, content: "aaa"}}},
		{name: "chown unknown user", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/x", Chown: "nosuchuser"},
			wantErr: "unable to find user nosuchuser"},
		{name: "setuid kept", req: copyRequest{Sources: []string{"suid"}, Dest: "/bin/"},
			want: map[string]copyWant{"bin/suid": {typ: "file", mode: 0o6755, content: "setuid binary"}}},
		{name: "top-level symlink followed", req: copyRequest{Sources: []string{"link-in"}, Dest: "/"},
			want: map[string]copyWant{"link-in": {typ: "file", content: "aaa"}}},
		{name: "symlink escaping context", req: copyRequest{Sources: []string{"escape"}, Dest: "/"}, wantErr: `"/escape": not found`},
		{name: "dotdot source clamped", req: copyRequest{Sources: []string{"../a.txt", "/b.txt"}, Dest: "/c/"},
			want: map[string]copyWant{"c/a.txt": {typ: "file", content: "aaa"}, "c/b.txt": {typ: "file", content: "bbb"}}},
		{name: "odd names", req: copyRequest{Sources: []string{"..gitme", "sp ace ü"}, Dest: "/n/"},
			want: map[string]copyWant{"n/..gitme": {typ: "file", content: "dots"}, "n/f.txt": {typ: "file", content: "unicode"}}},
		{name: "relative dest uses workdir", req: copyRequest{Sources: []string{"a.txt"}, Dest: "rel/", Workdir: "/w"},
			want: map[string]copyWant{"w/rel/a.txt": {typ: "file", content: "aaa"}}},
		{name: "dest dot is workdir", req: copyRequest{Sources: []string{"a.txt"}, Dest: ".", Workdir: "/w"},
			want: map[string]copyWant{"w/a.txt": {typ: "file", content: "aaa"}}},
		{name: "absolute symlink in rootfs", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/var/run/act/"},
			want: map[string]copyWant{"run/act/a.txt": {typ: "file", content: "aaa"}, "var/run": {typ: "symlink", link: "/run"}}},
		{name: "rootfs symlink escaping", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/evil/x"},
			want: map[string]copyWant{"victim/x": {typ: "file", content: "aaa"}}},
		{name: "existing file replaced", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/oldfile"},
			want: map[string]copyWant{"oldfile": {typ: "file", content: "aaa"}}},
		{name: "existing symlink replaced not followed", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/oldlink"},
			want: map[string]copyWant{"oldlink": {typ: "file", content: "aaa"}, "etc/passwd": {typ: "file", content: copyRootfs["etc/passwd"]}}},
		{name: "exclude", req: copyRequest{Sources: []string{"globdir"}, Dest: "/ex/", Exclude: []string{"*.md"}},
			want: map[string]copyWant{"ex/one.go": {typ: "file", content: "1"}, "ex/skip.md": {typ: "absent"}}},
		{name: "heredoc", req: copyRequest{Heredocs: []instructions.SourceContent{{Path: "hello.sh", Data: "echo hi\n"}}, Dest: "/h/", Chmod: "755"},
			want: map[string]copyWant{"h/hello.sh": {typ: "file", mode: 0o755, content: "echo hi\n"}}},
		{name: "ADD non-archive named tar.gz is copied", req: copyRequest{Add: true, Sources: []string{"x.tar.gz"}, Dest: "/t/"},
			want: map[string]copyWant{"t/x.tar.gz": {typ: "file", content: "not really a tarball"}}},
		{name: "dockerfile is sent", req: copyRequest{Sources: []string{"Dockerfile"}, Dest: "/df"},
			want: map[string]copyWant{"df": {typ: "file", content: "FROM scratch\n"}}},
		{name: "chmod symbolic", req: copyRequest{Sources: []string{"sub"}, Dest: "/cs", Chmod: "a-w,u+x"},
			want: map[string]copyWant{"cs": {typ: "dir", mode: 0o555}, "cs/f": {typ: "file", mode: 0o544, content: "fff"}, "cs/lnk": {typ: "symlink", link: "f"}}},
		{name: "chmod symbolic setuid", req: copyRequest{Sources: []string{"suid", "a.txt"}, Dest: "/cs/", Chmod: "u-s,o="},
			want: map[string]copyWant{"cs/suid": {typ: "file", mode: 0o2750, content: "setuid binary"}, "cs/a.txt": {typ: "file", mode: 0o640, content: "aaa"}}},
		{name: "chmod symbolic heredoc", req: copyRequest{Heredocs: []instructions.SourceContent{{Path: "run.sh", Data: "true\n"}}, Dest: "/h/", Chmod: "+x"},
			want: map[string]copyWant{"h/run.sh": {typ: "file", mode: 0o755, content: "true\n"}}},
		{name: "chmod symbolic bad", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/", Chmod: "u+z"}, wantErr: "invalid chmod parameter: 'u+z'"},
		// COPY --parents (BuildKit): the path below the pivot is kept.
		{name: "parents file", req: copyRequest{Sources: []string{"sub/deep/h"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p/sub": {typ: "dir", mode: 0o755, mtime: true}, "p/sub/deep": {typ: "dir", mode: 0o755, mtime: true},
				"p/sub/deep/h": {typ: "file", content: "hhh", mtime: true}, "p/h": {typ: "absent"}, "p/sub/f": {typ: "absent"}}},
		{name: "parents dest without slash", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/p", Parents: true},
			want: map[string]copyWant{"p": {typ: "dir"}, "p/a.txt": {typ: "file", content: "aaa"}}},
		{name: "parents pivot", req: copyRequest{Sources: []string{"sub/./deep/h", "./sub/./f"}, Dest: "/p", Parents: true},
			want: map[string]copyWant{"p/deep/h": {typ: "file", content: "hhh"}, "p/f": {typ: "file", content: "fff"}, "p/sub": {typ: "absent"}}},
		{name: "parents dir", req: copyRequest{Sources: []string{"sub/deep"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p/sub/deep": {typ: "dir", mtime: true}, "p/sub/deep/h": {typ: "file", content: "hhh"}, "p/deep": {typ: "absent"}}},
		{name: "parents pivot dir contents", req: copyRequest{Sources: []string{"sub/./"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p/f": {typ: "file", content: "fff"}, "p/deep/h": {typ: "file", content: "hhh"}}},
		{name: "parents glob", req: copyRequest{Sources: []string{"globdir/*.go"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p/globdir/one.go": {typ: "file", content: "1"}, "p/globdir/two.go": {typ: "file", content: "2"}, "p/globdir/skip.md": {typ: "absent"}}},
		{name: "parents glob pivot", req: copyRequest{Sources: []string{"s*/./f"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p/f": {typ: "file", content: "fff"}}},
		{name: "parents glob pivot one missing", req: copyRequest{Sources: []string{"s*/./f.txt"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p/f.txt": {typ: "file", content: "unicode"}}},
		{name: "parents symlink kept", req: copyRequest{Sources: []string{"link-in", "sub/lnk"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p/link-in": {typ: "symlink", link: "a.txt"}, "p/sub/lnk": {typ: "symlink", link: "f"}}},
		{name: "parents missing", req: copyRequest{Sources: []string{"sub/nope"}, Dest: "/p/", Parents: true}, wantErr: `"/sub/nope": not found`},
		{name: "parents missing dir", req: copyRequest{Sources: []string{"nodir/x"}, Dest: "/p/", Parents: true}, wantErr: "not found"},
		{name: "parents chown chmod", req: copyRequest{Sources: []string{"sub/deep/h"}, Dest: "/p/", Parents: true, Chown: "1234", Chmod: "go-rx"},
			want: map[string]copyWant{"p": {typ: "dir", mode: 0o755, uid: 1234, gid: 1234}, "p/sub": {typ: "dir", mode: 0o700, uid: 1234, gid: 1234},
				"p/sub/deep/h": {typ: "file", mode: 0o600, uid: 1234, gid: 1234, content: "hhh"}}},
		{name: "parents shared parent", req: copyRequest{Sources: []string{"sub/f", "sub/deep/h"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p/sub": {typ: "dir", mtime: true}, "p/sub/f": {typ: "file", content: "fff"}, "p/sub/deep/h": {typ: "file", content: "hhh"}}},
		{name: "parents exclude", req: copyRequest{Sources: []string{"globdir"}, Dest: "/p/", Parents: true, Exclude: []string{"*.md"}},
			want: map[string]copyWant{"p/globdir/one.go": {typ: "file", content: "1"}, "p/globdir/skip.md": {typ: "absent"}}},
		{name: "parents escaping dotdot clamped", req: copyRequest{Sources: []string{"../../sub/./f"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p/f": {typ: "file", content: "fff"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctxDir, rootfs, victim := copySetup(t)
			err := copyRun(t, tt.req, ctxDir, rootfs)
			copyCheckResult(t, err, tt.wantErr, rootfs, victim, tt.want)
		})
	}
}

// copyCheckResult checks err against wantErr ("" for success), then the
// rootfs against want and the victim directory for damage.
func copyCheckResult(t *testing.T, err error, wantErr, rootfs, victim string, want map[string]copyWant) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error %v, want %q", err, wantErr)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	copyVerify(t, rootfs, want)
	copyVerifyVictim(t, victim)
}

func copyVerifyVictim(t *testing.T, victim string) {
	t.Helper()
	ents, err := os.ReadDir(victim)
	copyCheck(t, err)
	if len(ents) != 1 || ents[0].Name() != "secret" {
		t.Errorf("victim dir changed: %v", ents)
	}
	if b, _ := os.ReadFile(filepath.Join(victim, "secret")); string(b) != "host secret" {
		t.Errorf("victim secret changed: %q", b)
	}
}

func TestCopyHardlinksAndXattr(t *testing.T) {
	copyRequireRoot(t)
	ctxDir, rootfs, _ := copySetup(t)
	capValue := []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if err := syscall.Setxattr(filepath.Join(ctxDir, "sub/deep/h"), "security.capability", capValue, 0); err != nil {
		t.Skipf("filesystem does not support security.capability: %v", err)
	}
	copyCheck(t, copyRun(t, copyRequest{Sources: []string{"sub"}, Dest: "/app/"}, ctxDir, rootfs))
	a, _ := os.Stat(filepath.Join(rootfs, "app/f"))
	b, _ := os.Stat(filepath.Join(rootfs, "app/hl"))
	if !os.SameFile(a, b) {
		t.Error("hardlinked context files were not copied as hardlinks")
	}
	buf := make([]byte, 64)
	n, err := syscall.Getxattr(filepath.Join(rootfs, "app/deep/h"), "security.capability", buf)
	if err != nil || !bytes.Equal(buf[:n], capValue) {
		t.Errorf("security.capability not kept: %x, %v", buf[:n], err)
	}
}

func TestCopyFromStageRoot(t *testing.T) {
	copyRequireRoot(t)
	ctxDir, rootfs, victim := copySetup(t)
	// --from: no ignore rules, absolute symlinks resolve inside the source root.
	src := filepath.Join(filepath.Dir(ctxDir), "stage")
	copyMakeTree(t, src, map[string]string{"usr/lib/x.so": "lib", "lib": "->/usr/lib", "ignored.txt": "kept"}, nil)
	err := copyRun(t, copyRequest{Sources: []string{"/lib/x.so", "ignored.txt", "../../victim/secret*"}, Dest: "/out/", SrcRoot: src}, ctxDir, rootfs)
	copyCheck(t, err)
	copyVerify(t, rootfs, map[string]copyWant{
		"out/x.so": {typ: "file", content: "lib"}, "out/ignored.txt": {typ: "file", content: "kept"}, "out/secret": {typ: "absent"},
	})
	copyVerifyVictim(t, victim)
}

func TestCopyInputs(t *testing.T) {
	t.Parallel()
	ctxDir, _, _ := copySetup(t)
	c, err := buildcontext.Open(ctxDir, nil)
	copyCheck(t, err)
	inputs := func() []string {
		p, err := copyPrepare(t.Context(), copyRequest{Context: c, Sources: []string{"sub", "globdir/*.go", "a.txt"}, Dest: "/x/"})
		copyCheck(t, err)
		var out []string
		for _, in := range p.Inputs() {
			out = append(out, in.Path+" "+in.Type+" "+in.Digest+" "+in.Link)
		}
		return out
	}
	before := strings.Join(inputs(), "\n")
	for _, want := range []string{"0/sub dir", "0/sub/lnk symlink  f", "0/sub/hl hardlink  0/sub/f", "1/globdir/one.go file sha256:", "2/a.txt file sha256:"} {
		if !strings.Contains(before, want) {
			t.Errorf("inputs lack %q:\n%s", want, before)
		}
	}
	copyCheck(t, os.Chtimes(filepath.Join(ctxDir, "a.txt"), time.Now(), time.Now()))
	if after := strings.Join(inputs(), "\n"); after != before {
		t.Errorf("mtime change altered inputs:\n%s\n---\n%s", before, after)
	}
	copyCheck(t, os.WriteFile(filepath.Join(ctxDir, "a.txt"), []byte("AAA"), 0o644))
	if after := strings.Join(inputs(), "\n"); after == before {
		t.Error("content change did not alter inputs")
	}
	p, err := copyPrepare(t.Context(), copyRequest{Context: c, Sources: []string{"a.txt"}, Dest: "x", Workdir: "/w", Chmod: "755"})
	copyCheck(t, err)
	got := map[string]string{}
	for _, f := range p.Fields() {
		got[f.Name] = f.Value
	}
	if got["dest"] != "/w/x" || got["flag.chmod"] != "755" {
		t.Errorf("fields %v", got)
	}
}

// copyTar builds a tar with a dir, a file, a symlink, a hardlink and a
// whiteout-named file (kept verbatim by ADD).
func copyTar(t *testing.T) []byte {
	t.Helper()
	return copyTarOf(t, []*tar.Header{
		{Name: "pkg/", Typeflag: tar.TypeDir, Mode: 0o750, ModTime: copyMtime, Uid: 5, Gid: 6},
		{Name: "pkg/bin", Typeflag: tar.TypeReg, Mode: 0o4755, ModTime: copyMtime, Size: 3, Uid: 5, Gid: 6},
		{Name: "pkg/link", Typeflag: tar.TypeSymlink, Linkname: "bin", ModTime: copyMtime},
		{Name: "pkg/hard", Typeflag: tar.TypeLink, Linkname: "pkg/bin"},
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
	copyRequireRoot(t)
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
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (CI=true)", tool)
		}
		t.Skipf("%s not installed", tool)
	}
	cmd := exec.Command(tool, "-c")
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	copyCheck(t, err)
	return out
}

func TestCopyChmod(t *testing.T) {
	t.Parallel()
	tests := []struct {
		spec  string
		in    uint32
		dir   bool
		want  uint32
		isErr bool
	}{
		{spec: "755", in: 0o600, want: 0o755},
		{spec: "4710", in: 0o644, dir: true, want: 0o4710},
		{spec: "u+x", in: 0o644, want: 0o744},
		{spec: "g-w", in: 0o664, want: 0o644},
		{spec: "a=r", in: 0o755, want: 0o444},
		{spec: "u+x,g-w", in: 0o664, want: 0o744},
		{spec: "ug+rw", in: 0, want: 0o660},
		{spec: "u=rwx,g=rx,o=", in: 0o7, want: 0o750},
		{spec: "go=", in: 0o755, want: 0o700},
		{spec: "go=u-w", in: 0o700, want: 0o755},
		{spec: "u+x-w", in: 0o644, want: 0o544},
		// No "who": relative to the umask 022, as BuildKit's daemon.
		{spec: "+x", in: 0o644, want: 0o755},
		{spec: "+w", in: 0o444, want: 0o644},
		{spec: "-w", in: 0o666, want: 0o466},
		{spec: "=rw,+X", in: 0o100, want: 0o755},
		{spec: "=rw,+X", in: 0, dir: true, want: 0o755},
		{spec: "=rw,+X", in: 0, want: 0o644},
		{spec: "+X", in: 0o644, want: 0o644},
		{spec: "+X", in: 0o644, dir: true, want: 0o755},
		{spec: "-X", in: 0o755, want: 0o755},
		{spec: "u+s", in: 0o755, want: 0o4755},
		{spec: "g+s", in: 0o755, want: 0o2755},
		{spec: "o+s", in: 0o755, want: 0o755},
		{spec: "+t", in: 0o755, dir: true, want: 0o1755},
		{spec: "o+t", in: 0o755, want: 0o755},
		{spec: "u=rw", in: 0o4755, want: 0o655},
		{spec: "a-x", in: 0o6755, want: 0o6644},
		{spec: "abc", isErr: true},
		{spec: "u", isErr: true},
		{spec: "u+x,", isErr: true},
		{spec: "u+z", isErr: true},
		{spec: "u+rg", isErr: true},
		{spec: "x+u", isErr: true},
		{spec: "999", isErr: true},
		{spec: "7u", isErr: true},
		{spec: "17777", isErr: true},
	}
	for _, tt := range tests {
		c, err := copyParseChmod(tt.spec)
		if tt.isErr {
			if err == nil || !strings.Contains(err.Error(), "invalid chmod parameter: '"+tt.spec+"'") {
				t.Errorf("%q: error %v, want invalid chmod parameter", tt.spec, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.spec, err)
			continue
		}
		if got := c.apply(tt.in, tt.dir); got != tt.want {
			t.Errorf("%q on %#o (dir %v) = %#o, want %#o", tt.spec, tt.in, tt.dir, got, tt.want)
		}
	}
}

func TestCopyParentsInputs(t *testing.T) {
	t.Parallel()
	ctxDir, _, _ := copySetup(t)
	c, err := buildcontext.Open(ctxDir, nil)
	copyCheck(t, err)
	prepare := func(srcs ...string) ([]string, map[string]string) {
		p, err := copyPrepare(t.Context(), copyRequest{Context: c, Sources: srcs, Dest: "/x/", Parents: true})
		copyCheck(t, err)
		var in []string
		for _, f := range p.Inputs() {
			in = append(in, f.Path+" "+f.Type)
		}
		fields := map[string]string{}
		for _, f := range p.Fields() {
			fields[f.Name] = f.Value
		}
		return in, fields
	}
	in, fields := prepare("sub/deep/h", "sub/f")
	want := []string{"0/sub dir", "0/sub/deep dir", "0/sub/deep/h file", "1/sub dir", "1/sub/f file"}
	if strings.Join(in, "\n") != strings.Join(want, "\n") {
		t.Errorf("inputs:\n%s\nwant:\n%s", strings.Join(in, "\n"), strings.Join(want, "\n"))
	}
	if fields["flag.parents"] != "true" || fields["source.0.pivot.sub/deep/h"] != "." {
		t.Errorf("fields %v", fields)
	}
	_, pivoted := prepare("sub/./deep/h", "sub/f")
	if pivoted["source.0.pivot.sub/deep/h"] != "sub" {
		t.Errorf("a pivot does not reach the key: %v", pivoted)
	}
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
	copyRequireRoot(t)
	t.Parallel()
	reg := func(name string, size int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: copyMtime, Uid: 7, Gid: 8}
	}
	tests := []copyHostileTar{
		{name: "dotdot entry", hdrs: []*tar.Header{reg("../../escape", 0)}, wantErr: "path escapes the root"},
		{name: "dotdot hardlink", hdrs: []*tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../../victim/secret"}},
			wantErr: "path escapes the root"},
		{name: "absolute symlink stays in dest", hdrs: []*tar.Header{
			{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"}, reg("l/inner", 3)},
			want: map[string]copyWant{"t/l": {typ: "symlink", link: "/"}, "t/inner": {typ: "file", uid: 7, gid: 8, content: "bin"}, "inner": {typ: "absent"}}},
		{name: "symlink to host dir", hdrs: []*tar.Header{
			{Name: "v", Typeflag: tar.TypeSymlink, Linkname: "../../victim"}, reg("v/secret", 3)},
			want: map[string]copyWant{"t/victim/secret": {typ: "file", content: "bin", uid: 7, gid: 8}}},
		{name: "absolute names", hdrs: []*tar.Header{reg("/etc/passwd", 3)},
			want: map[string]copyWant{"t/etc/passwd": {typ: "file", content: "bin", uid: 7, gid: 8}, "etc/passwd": {typ: "file", content: copyRootfs["etc/passwd"]}}},
		{name: "chown overrides archive owner", chown: "app", hdrs: []*tar.Header{
			{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: copyMtime, Uid: 7}, reg("d/f", 3)},
			want: map[string]copyWant{"t/d": {typ: "dir", uid: 1000, gid: 1001, mtime: true}, "t/d/f": {typ: "file", content: "bin", uid: 1000, gid: 1001}}},
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
		})
	}
}

// copyUserNSEnv tells a re-executed test binary to act as the child of
// TestAddArchiveDeviceUserNS, with the test's base directory as its value.
const copyUserNSEnv = "BUILDER_TEST_ADD_USERNS_DIR"

// TestAddArchiveDeviceUserNS extracts an archive with a device node in a
// user namespace, where mknod fails with EPERM: the device is skipped with
// a warning and the rest of the archive is extracted.
func TestAddArchiveDeviceUserNS(t *testing.T) {
	if dir := os.Getenv(copyUserNSEnv); dir != "" {
		copyUserNSChild(t, dir)
		return
	}
	copyRequireRoot(t)
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
		if os.Getenv("CI") == "true" {
			t.Fatalf("test requires user namespaces (CI=true): %v", err)
		}
		t.Skipf("test requires user namespaces: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child in user namespace: %v\n%s", err, out.String())
	}
	for _, want := range []string{`WARN skip device "null"`, `WARN skip device "disk"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("child output lacks %q:\n%s", want, out.String())
		}
	}
	copyVerify(t, rootfs, map[string]copyWant{
		"t/null": {typ: "absent"}, "t/disk": {typ: "absent"}, "t/after": {typ: "file", content: "bin", uid: 7, gid: 8},
	})
}

// copyUserNSChild runs the ADD inside the user namespace and prints the
// warnings it receives.
func copyUserNSChild(t *testing.T, dir string) {
	req := copyRequest{Add: true, Sources: []string{"dev.tar"}, Dest: "/t",
		Warn: func(msg string) { fmt.Println("WARN", msg) }}
	copyCheck(t, copyRun(t, req, filepath.Join(dir, "ctx"), filepath.Join(dir, "rootfs")))
}
