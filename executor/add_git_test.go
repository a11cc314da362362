package executor

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/builder-dev/builder/internal/testenv"
)

// gitRepo makes a repository with foo (v1, then v2 at master) and returns
// its file:// URL and the commits of v1 and master.
func gitRepo(t *testing.T) (url, v1, head string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git binary")
	}
	dir := t.TempDir()
	run := func(c string) string {
		cmd := exec.Command("sh", "-c", c)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@x", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@x")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", c, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("git -c init.defaultBranch=master init -q && mkdir d && echo one > d/foo && git add . && git commit -qm 1 && git tag v1")
	run("echo two > d/foo && git commit -qam 2")
	return "file://" + dir, run("git rev-parse v1"), run("git rev-parse HEAD")
}

func TestAddGit(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	url, v1, head := gitRepo(t)
	tests := []struct {
		name    string
		req     copyRequest
		want    map[string]copyWant
		wantErr string
	}{
		{name: "default branch", req: copyRequest{Add: true, Sources: []string{url}, Dest: "/repo"},
			want: map[string]copyWant{"repo/d/foo": {typ: "file", mode: 0o644, content: "two\n"}, "repo/.git": {typ: "absent"}}},
		{name: "tag and subdir", req: copyRequest{Add: true, Sources: []string{url + "#v1:d"}, Dest: "/x/"},
			want: map[string]copyWant{"x/foo": {typ: "file", content: "one\n"}}},
		{name: "keep git dir and chown", req: copyRequest{Add: true, Sources: []string{url + "#v1"}, Dest: "/k", KeepGitDir: true, Chown: "7:8"},
			want: map[string]copyWant{"k/d/foo": {typ: "file", content: "one\n", uid: 7, gid: 8}, "k/.git/HEAD": {typ: "file", content: v1 + "\n", uid: 7, gid: 8}}},
		{name: "checksum", req: copyRequest{Add: true, Sources: []string{url + "#v1"}, Dest: "/c", Checksum: v1},
			want: map[string]copyWant{"c/d/foo": {typ: "file", content: "one\n"}}},
		{name: "checksum mismatch", req: copyRequest{Add: true, Sources: []string{url + "#v1"}, Dest: "/c", Checksum: head}, wantErr: "expected checksum to match " + head},
		{name: "checksum not hex", req: copyRequest{Add: true, Sources: []string{url}, Dest: "/c", Checksum: "sha256:abc"}, wantErr: "expected hex commit hash"},
		{name: "checksum and commit=", req: copyRequest{Add: true, Sources: []string{url + "?commit=" + v1}, Dest: "/c", Checksum: head}, wantErr: "checksum mismatch"},
		{name: "keep-git-dir flag and query", req: copyRequest{Add: true, Sources: []string{url + "?keep-git-dir=false"}, Dest: "/c", KeepGitDir: true}, wantErr: "inconsistent keep-git-dir configuration"},
		{name: "COPY", req: copyRequest{Sources: []string{url}, Dest: "/c"}, wantErr: "source can't be a git ref for COPY"},
		{name: "missing ref", req: copyRequest{Add: true, Sources: []string{url + "#nope"}, Dest: "/c"}, wantErr: "repository does not contain ref nope"},
		{name: "option as ref", req: copyRequest{Add: true, Sources: []string{url + "#--upload-pack=touch"}, Dest: "/c"}, wantErr: "invalid git ref"},
		{name: "subdir climbing out", req: copyRequest{Add: true, Sources: []string{url + "#:d/../.."}, Dest: "/c"},
			want: map[string]copyWant{"c/d/foo": {typ: "file", content: "two\n"}}}, // cleaned to the root, never above it
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctxDir, rootfs, victim := copySetup(t)
			tmp := t.TempDir()
			tt.req.TempDir = tmp
			err := copyRun(t, tt.req, ctxDir, rootfs)
			copyCheckResult(t, err, tt.wantErr, rootfs, victim, tt.want)
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Errorf("checkouts left behind: %v", ents)
			}
		})
	}
}

// A Git source is keyed by its commit: the same commit named by a branch,
// a tag or with --checksum gives the same key without fetching anything,
// a new commit another.
func TestAddGitKey(t *testing.T) {
	url, v1, head := gitRepo(t)
	fields := func(src, checksum string) map[string]string {
		t.Helper()
		p, err := copyPrepare(t.Context(), copyRequest{Add: true, Sources: []string{src}, Dest: "/", Checksum: checksum, TempDir: t.TempDir()})
		copyCheck(t, err)
		defer p.Close()
		out := map[string]string{}
		for _, f := range p.Fields() {
			out[f.Name] = f.Value
		}
		return out
	}
	a, b, c := fields(url+"#master", ""), fields(url+"?branch=master", head), fields(url+"#v1", "")
	if a["source.0.git"] != head || len(a) != len(b) {
		t.Errorf("fields of #master %v, of ?branch=master with --checksum %v: want the same, keyed by %s", a, b, head)
	}
	if c["source.0.git"] != v1 {
		t.Errorf("fields of #v1: %v, want the commit %s", c, v1)
	}
}
