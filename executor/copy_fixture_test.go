package executor

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/buildcontext"
)

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
	"dirlink":         "->sub",
	"escape":          "->../victim/secret",
	"ignored.txt":     "ignored",
	"x.tar.gz":        "not really a tarball",
	"Dockerfile":      "FROM scratch\n",
	"sp ace ü/f.txt":  "unicode",
	"globdir/one.go":  "1",
	"globdir/two.go":  "2",
	"globdir/skip.md": "md",
	"priv/p":          "ppp",
	"priv/sub/":       "",
	"priv2/q":         "qqq",
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
	"symdest":      "->../nowhere/target",
}

// copySetup makes victim, context and rootfs dirs side by side.
func copySetup(t *testing.T) (ctxDir, rootfs, victim string) {
	t.Helper()
	base := t.TempDir()
	ctxDir, rootfs, victim = filepath.Join(base, "ctx"), filepath.Join(base, "rootfs"), filepath.Join(base, "victim")
	copyMakeTree(t, victim, map[string]string{"secret": "host secret"}, nil)
	copyMakeTree(t, ctxDir, copyContext, map[string]os.FileMode{"suid": 0o755 | os.ModeSetuid | os.ModeSetgid,
		"priv": 0o700, "priv/sub": 0o700, "priv2": 0o700})
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
