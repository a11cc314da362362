package executor

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/builder-dev/builder/internal/testenv"
)

func TestCopy(t *testing.T) {
	testenv.RequireRoot(t)
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
		// BuildKit copies each source in turn: into dest once it is a
		// directory, over it otherwise (testExcludedFilesOnCopy).
		{name: "multiple files into a non-directory: the last wins", req: copyRequest{Sources: []string{"a.txt", "b.txt"}, Dest: "/nodir"},
			want: map[string]copyWant{"nodir": {typ: "file", content: "bbb"}}},
		{name: "multiple dirs into a new dest without slash merge", req: copyRequest{Sources: []string{"globdir", "sub/deep"}, Dest: "/m"},
			want: map[string]copyWant{"m": {typ: "dir", mode: 0o755}, "m/one.go": {typ: "file", content: "1"}, "m/h": {typ: "file", content: "hhh"}}},
		{name: "dir then file into dest without slash", req: copyRequest{Sources: []string{"sub/deep", "a.txt"}, Dest: "/m"},
			want: map[string]copyWant{"m/h": {typ: "file", content: "hhh"}, "m/a.txt": {typ: "file", content: "aaa"}}},
		{name: "file then dir into dest without slash", req: copyRequest{Sources: []string{"a.txt", "sub/deep"}, Dest: "/m"},
			wantErr: "cannot copy to non-directory: /m"},
		{name: "multiple sources into existing dir", req: copyRequest{Sources: []string{"a.txt", "b.txt"}, Dest: "/existing"},
			want: map[string]copyWant{"existing/a.txt": {typ: "file", content: "aaa"}, "existing/b.txt": {typ: "file", content: "bbb"}}},
		{name: "glob several dirs into dest without slash", req: copyRequest{Sources: []string{"priv*"}, Dest: "/g"},
			want: map[string]copyWant{"g": {typ: "dir", mode: 0o755}, "g/p": {typ: "file", content: "ppp"}, "g/q": {typ: "file", content: "qqq"}}},
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
		// The directories made for the destination get an octal --chmod
		// without its special bits; entries below get all of it.
		{name: "chmod", req: copyRequest{Sources: []string{"sub"}, Dest: "/cm", Chmod: "4710"},
			want: map[string]copyWant{"cm": {typ: "dir", mode: 0o710}, "cm/f": {typ: "file", mode: 0o4710, content: "fff"},
				"cm/deep": {typ: "dir", mode: 0o4710}, "cm/lnk": {typ: "symlink", link: "f"}}},
		{name: "chmod makes parents", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/p1/p2/f", Chmod: "770"},
			want: map[string]copyWant{"p1": {typ: "dir", mode: 0o770}, "p1/p2": {typ: "dir", mode: 0o770}, "p1/p2/f": {typ: "file", mode: 0o770, content: "aaa"}}},
		{name: "chmod makes dest dir", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/p1/", Chmod: "0444"},
			want: map[string]copyWant{"p1": {typ: "dir", mode: 0o444}, "p1/a.txt": {typ: "file", mode: 0o444, content: "aaa"}}},
		{name: "chmod keeps existing parents", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/existing/n/", Chmod: "700"},
			want: map[string]copyWant{"existing": {typ: "dir", mode: 0o755}, "existing/n": {typ: "dir", mode: 0o700}}},
		{name: "tree dest is made 0755, not with the source dir's mode", req: copyRequest{Sources: []string{"priv"}, Dest: "/pv"},
			want: map[string]copyWant{"pv": {typ: "dir", mode: 0o755, mtime: true}, "pv/p": {typ: "file", content: "ppp"}, "pv/sub": {typ: "dir", mode: 0o700}}},
		{name: "dest through symlink to missing dirs", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/symdest/"},
			want: map[string]copyWant{"symdest": {typ: "symlink", link: "../nowhere/target"}, "nowhere": {typ: "dir", mode: 0o755},
				"nowhere/target": {typ: "dir", mode: 0o755}, "nowhere/target/a.txt": {typ: "file", content: "aaa"}}},
		{name: "dir onto a file", req: copyRequest{Sources: []string{"sub"}, Dest: "/oldfile"}, wantErr: "cannot copy to non-directory: /oldfile"},
		{name: "chown numeric", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/o/p/", Chown: "1234"},
			want: map[string]copyWant{"o": {typ: "dir", mode: 0o755, uid: 1234, gid: 1234}, "o/p/a.txt": {typ: "file", uid: 1234, gid: 1234, content: "aaa"}}},
		{name: "chown name primary group", req: copyRequest{Sources: []string{"sub"}, Dest: "/o", Chown: "app"},
			want: map[string]copyWant{"o": {typ: "dir", uid: 1000, gid: 1001}, "o/lnk": {typ: "symlink", link: "f", uid: 1000, gid: 1001}}},
		{name: "chown name: empty group is the primary group", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/x", Chown: "app:"},
			want: map[string]copyWant{"x": {typ: "file", uid: 1000, gid: 1001, content: "aaa"}}},
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
		// A file's destination that is a symlink is followed inside the
		// root, as BuildKit's copy resolves it (fsutil's RootPath): the
		// link stays and its target is written, made if missing with
		// the directories above it.
		{name: "existing symlink followed inside the root", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/oldlink"},
			want: map[string]copyWant{"oldlink": {typ: "symlink", link: "/etc/passwd"}, "etc/passwd": {typ: "file", content: "aaa"}}},
		{name: "symlink to a missing file followed", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/symdest"},
			want: map[string]copyWant{"symdest": {typ: "symlink", link: "../nowhere/target"}, "nowhere": {typ: "dir", mode: 0o755},
				"nowhere/target": {typ: "file", content: "aaa"}}},
		{name: "escaping symlink followed inside the root", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/evil"},
			want: map[string]copyWant{"evil": {typ: "symlink", link: "../victim"}, "victim": {typ: "file", content: "aaa"}}},
		{name: "exclude", req: copyRequest{Sources: []string{"globdir"}, Dest: "/ex/", Exclude: []string{"*.md"}},
			want: map[string]copyWant{"ex/one.go": {typ: "file", content: "1"}, "ex/skip.md": {typ: "absent"}}},
		{name: "heredoc", req: copyRequest{Heredocs: []instructions.SourceContent{{Path: "hello.sh", Data: "echo hi\n"}}, Dest: "/h/", Chmod: "755"},
			want: map[string]copyWant{"h/hello.sh": {typ: "file", mode: 0o755, content: "echo hi\n"}}},
		{name: "ADD non-archive named tar.gz is copied", req: copyRequest{Add: true, Sources: []string{"x.tar.gz"}, Dest: "/t/"},
			want: map[string]copyWant{"t/x.tar.gz": {typ: "file", content: "not really a tarball"}}},
		{name: "dockerfile is sent", req: copyRequest{Sources: []string{"Dockerfile"}, Dest: "/df"},
			want: map[string]copyWant{"df": {typ: "file", content: "FROM scratch\n"}}},
		{name: "chmod symbolic", req: copyRequest{Sources: []string{"sub"}, Dest: "/cs", Chmod: "a-w,u+x"},
			want: map[string]copyWant{"cs": {typ: "dir", mode: 0o755}, "cs/deep": {typ: "dir", mode: 0o555}, "cs/f": {typ: "file", mode: 0o544, content: "fff"}, "cs/lnk": {typ: "symlink", link: "f"}}},
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
		// BuildKit: "sub/./" is an empty include pattern, which selects
		// nothing, and a literal source must select something.
		{name: "parents pivot alone is not found", req: copyRequest{Sources: []string{"sub/./"}, Dest: "/p/", Parents: true},
			wantErr: `"/sub": not found`},
		{name: "parents missing literal pivot", req: copyRequest{Sources: []string{"nodir/./x*"}, Dest: "/p/", Parents: true},
			wantErr: `"/nodir": not found`},
		{name: "parents file pivot is copied whole", req: copyRequest{Sources: []string{"a.tx[t]/./**/h", "[b]*/./**/h", "su[b]/./**/h"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p/a.txt": {typ: "file", content: "aaa"}, "p/b.txt": {typ: "file", content: "bbb"}, "p/deep/h": {typ: "file", content: "hhh"}}},
		// A pivot is followed: one that leads nowhere fails, as in BuildKit
		// (there "lstat /victim/secret: no such file or directory").
		{name: "parents glob pivot symlink leading nowhere", req: copyRequest{Sources: []string{"*/./**/h"}, Dest: "/p/", Parents: true},
			wantErr: `"/escape": not found`},
		// Below the pivot a symlink is copied, whatever it points to.
		{name: "parents glob below pivot keeps symlinks", req: copyRequest{Sources: []string{"sub/./e*"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p/esc": {typ: "symlink", link: "../../victim/secret"}, "p/empty": {typ: "dir"}}},
		// A wildcard source is followed as a source written out.
		{name: "glob match symlink leading nowhere", req: copyRequest{Sources: []string{"esc*"}, Dest: "/g/"},
			wantErr: `"/escape": not found`},
		{name: "glob below a matched directory keeps symlinks", req: copyRequest{Sources: []string{"s?b"}, Dest: "/g/"},
			want: map[string]copyWant{"g/esc": {typ: "symlink", link: "../../victim/secret"}, "g/f": {typ: "file", content: "fff"}}},
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
		// --exclude matches the path from the pivot (BuildKit's fsutil copy).
		{name: "parents exclude", req: copyRequest{Sources: []string{"globdir"}, Dest: "/p/", Parents: true, Exclude: []string{"globdir/*.md"}},
			want: map[string]copyWant{"p/globdir/one.go": {typ: "file", content: "1"}, "p/globdir/skip.md": {typ: "absent"}}},
		{name: "parents exclude is relative to the pivot", req: copyRequest{Sources: []string{"globdir"}, Dest: "/p/", Parents: true, Exclude: []string{"*.md"}},
			want: map[string]copyWant{"p/globdir/one.go": {typ: "file", content: "1"}, "p/globdir/skip.md": {typ: "file", content: "md"}}},
		{name: "parents excluded literal is not found", req: copyRequest{Sources: []string{"a.txt"}, Dest: "/p/", Parents: true, Exclude: []string{"*.txt"}},
			wantErr: `"/a.txt": not found`},
		// Two paths through one symlinked directory are both copied, as by
		// Docker's classic builder (BuildKit fails the second: buildx#611).
		{name: "two sources through a symlinked directory", req: copyRequest{Sources: []string{"dirlink/f", "dirlink/deep/h"}, Dest: "/t/"},
			want: map[string]copyWant{"t/f": {typ: "file", content: "fff"}, "t/h": {typ: "file", content: "hhh"}}},
		// With --exclude, BuildKit checksums the root's entries with their
		// links followed: one leading nowhere fails, unless excluded.
		{name: "exclude follows the root's symlinks", req: copyRequest{Sources: []string{"."}, Dest: "/e/", Exclude: []string{"nomatch"}},
			wantErr: `"/escape": not found`},
		{name: "exclude of the root's symlink leading nowhere", req: copyRequest{Sources: []string{"/"}, Dest: "/e/", Exclude: []string{"escape", "ignored.txt"}},
			want: map[string]copyWant{"e/escape": {typ: "absent"}, "e/link-in": {typ: "symlink", link: "a.txt"}, "e/sub/esc": {typ: "symlink", link: "../../victim/secret"}}},
		{name: "exclude never drops a named source", req: copyRequest{Sources: []string{"a.txt", "sub"}, Dest: "/e/", Exclude: []string{"*.txt", "sub", "deep"}},
			want: map[string]copyWant{"e/a.txt": {typ: "file", content: "aaa"}, "e/f": {typ: "file", content: "fff"}, "e/deep": {typ: "absent"}}},
		// The part after the pivot is an include pattern: "**" spans
		// directories, a match takes its subtree (testCopyRelativeParents).
		{name: "parents doublestar", req: copyRequest{Sources: []string{"s*/./**/h", "./**/one.go"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p/deep/h": {typ: "file", content: "hhh"}, "p/globdir/one.go": {typ: "file", content: "1"},
				"p/sub": {typ: "absent"}, "p/globdir/two.go": {typ: "absent"}}},
		{name: "parents pattern match takes its subtree", req: copyRequest{Sources: []string{"./s*b"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p/sub/deep/h": {typ: "file", content: "hhh"}, "p/sub/lnk": {typ: "symlink", link: "f"}}},
		{name: "parents nothing matches still makes dest", req: copyRequest{Sources: []string{"sub/nomatch*/x"}, Dest: "/p/", Parents: true, Chmod: "0750"},
			want: map[string]copyWant{"p": {typ: "dir", mode: 0o750}, "p/sub": {typ: "absent"}}},
		{name: "parents no pivot matches makes nothing", req: copyRequest{Sources: []string{"nomatch*/./x"}, Dest: "/p/", Parents: true},
			want: map[string]copyWant{"p": {typ: "absent"}}},
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

func TestCopyHardlinksAndXattr(t *testing.T) {
	testenv.RequireRoot(t)
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
	testenv.RequireRoot(t)
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

// TestCopySocket: a socket in the context becomes an empty regular file
// with the socket's permissions, as BuildKit copies it (testCopySocket).
func TestCopySocket(t *testing.T) {
	testenv.RequireRoot(t)
	ctxDir, rootfs, _ := copySetup(t)
	sock := filepath.Join(ctxDir, "s.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o640); err != nil {
		t.Fatal(err)
	}
	copyCheck(t, copyRun(t, copyRequest{Sources: []string{"s.sock"}, Dest: "/out/"}, ctxDir, rootfs))
	copyVerify(t, rootfs, map[string]copyWant{"out/s.sock": {typ: "file", content: ""}})
	if fi, err := os.Lstat(filepath.Join(rootfs, "out/s.sock")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("copied socket: %v, %v; want a 0640 regular file", fi.Mode(), err)
	}
}

// TestCopyFromKeepsOwners: COPY --from a stage without --chown keeps the
// owners of the copied files; the directory a tree is copied into is made
// as root, and an existing one keeps its owner (BuildKit
// testCopyChownExistingDir). With --chown, or from the context, they go.
func TestCopyFromKeepsOwners(t *testing.T) {
	testenv.RequireRoot(t)
	ctxDir, rootfs, _ := copySetup(t)
	src := filepath.Join(filepath.Dir(ctxDir), "stage")
	copyMakeTree(t, src, map[string]string{"file": "f", "dir/subdir/nested": "n"}, nil)
	for p, own := range map[string][2]int{"file": {100, 200}, "dir": {100, 200}, "dir/subdir": {101, 201}, "dir/subdir/nested": {102, 202}} {
		if err := os.Lchown(filepath.Join(src, p), own[0], own[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(rootfs, "existing"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(rootfs, "existing"), 500, 600); err != nil {
		t.Fatal(err)
	}
	copyCheck(t, copyRun(t, copyRequest{Sources: []string{"/file"}, Dest: "/", SrcRoot: src}, ctxDir, rootfs))
	copyCheck(t, copyRun(t, copyRequest{Sources: []string{"/dir"}, Dest: "/dir", SrcRoot: src}, ctxDir, rootfs))
	copyCheck(t, copyRun(t, copyRequest{Sources: []string{"/dir/."}, Dest: "/existing", SrcRoot: src}, ctxDir, rootfs))
	copyCheck(t, copyRun(t, copyRequest{Sources: []string{"/file"}, Dest: "/chowned", SrcRoot: src, Chown: "7:8"}, ctxDir, rootfs))
	want := map[string][2]uint32{
		"file": {100, 200}, "dir": {0, 0}, "dir/subdir": {101, 201}, "dir/subdir/nested": {102, 202},
		"existing": {500, 600}, "existing/subdir": {101, 201}, "chowned": {7, 8},
	}
	for p, own := range want {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(rootfs, p), &st); err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if st.Uid != own[0] || st.Gid != own[1] {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, own[0], own[1])
		}
	}
}

// TestCopyLinkLayerOnScratch: COPY --link (without --chmod) makes its
// layer on an empty root, as BuildKit merges its copy onto scratch: the
// layer holds a file the stage has unchanged, and a file on the
// destination path does not stop it. Without --link, or with --chmod,
// the copy goes into the stage, where an unchanged file changes nothing.
// (The conformance cases diff-copy-link-* check the stacked image.)
func TestCopyLinkLayerOnScratch(t *testing.T) {
	f := newFakeBuild(t)
	f.write("g", "group\n")
	res, _ := f.mustRun(`FROM scratch
COPY g /etc/group
COPY g /etc/group
COPY --link g /etc/group
COPY --link --chmod=0644 g /etc/group
COPY --link g /etc/group/
`)
	var got []string
	for _, s := range res.Record.Steps {
		if s.Inputs != nil && s.Inputs.Op == "COPY" {
			got = append(got, fmt.Sprintf("%s: %d", s.Instruction, s.Size))
		}
	}
	want := []string{"COPY g /etc/group: 1", "COPY g /etc/group: 0", "COPY --link g /etc/group: 1",
		"COPY --link --chmod=0644 g /etc/group: 0", "COPY --link g /etc/group/: 1"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("files in each layer:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestCopyLinkReusedOverChangedSteps: a COPY --link layer does not depend
// on the steps below it, so a build in which they changed reuses it, as
// BuildKit does; the steps after it run again. With --no-cache it runs.
func TestCopyLinkReusedOverChangedSteps(t *testing.T) {
	const df = `FROM scratch
COPY a /a
COPY --link b /b
RUN echo c > /c
`
	f := newFakeBuild(t)
	f.write("a", "1")
	f.write("b", "b")
	first, _ := f.mustRun(df)
	f.write("a", "2")
	second, _ := f.mustRun(df)
	wantSteps(t, second,
		"COPY a /a: miss (a content changed)",
		"COPY --link b /b: hit (--link layer of an earlier build, over other steps)",
		"RUN echo c > /c: miss (parent step rebuilt (line 2))")
	if got, want := second.Record.Steps[2].Layer, first.Record.Steps[2].Layer; got != want || got == "" {
		t.Errorf("--link layer %q, want the earlier build's %q", got, want)
	}
	third, _ := f.mustRun(df)
	wantSteps(t, third, "COPY a /a: hit", "COPY --link b /b: hit", "RUN echo c > /c: hit")
	f.write("a", "3")
	fourth, _ := f.mustRun(df, func(o *Options) { o.NoCache = true })
	wantSteps(t, fourth, "COPY a /a: miss (--no-cache)", "COPY --link b /b: miss (--no-cache)", "RUN echo c > /c: miss (--no-cache)")
}
