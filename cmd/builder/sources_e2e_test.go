package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// gitRepo makes a git repository in the env's scratch space by running
// each command with sh, and returns its file:// URL and a rev-parse.
func (e *e2eEnv) gitRepo(cmds ...string) (string, func(rev string) string) {
	e.t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		e.t.Skip("no git binary")
	}
	dir, err := os.MkdirTemp(e.dir, "repo-")
	if err != nil {
		e.t.Fatal(err)
	}
	sh := func(c string) string {
		cmd := exec.Command("sh", "-c", c)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@x",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@x", "GIT_COMMITTER_DATE=2023-11-14T22:15:01Z", "GIT_AUTHOR_DATE=2023-11-14T22:15:01Z")
		out, err := cmd.CombinedOutput()
		if err != nil {
			e.t.Fatalf("%s: %v\n%s", c, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	sh("git -c init.defaultBranch=master init -q")
	for _, c := range cmds {
		sh(c)
	}
	return "file://" + dir, func(rev string) string { return sh("git rev-parse " + rev) }
}

// local builds into a type=local output and returns its directory.
func (e *e2eEnv) local(args ...string) (string, string) {
	e.t.Helper()
	out, err := os.MkdirTemp(e.dir, "out-")
	if err != nil {
		e.t.Fatal(err)
	}
	_, errOut := e.mustRun(append([]string{"build", "--progress", "plain", "-o", "type=local,dest=" + out}, args...)...)
	return out, errOut
}

func TestE2EGitSources(t *testing.T) {
	e := newEnv(t)
	url, rev := e.gitRepo(
		"mkdir sub && echo one > sub/foo && printf 'FROM scratch\\nCOPY foo /from-sub\\n' > sub/Dockerfile",
		"printf 'FROM scratch\\nCOPY sub/foo /foo\\n' > Dockerfile && git add . && git commit -qm one && git tag v1",
		"echo two > sub/foo && git commit -qam two")
	v1 := rev("v1")

	// ADD of a Git URL: the tag's tree, .git kept on request.
	ctx := e.context("FROM busybox:fixture\nADD --keep-git-dir "+url+"#v1 /repo\nRUN cat /repo/sub/foo /repo/.git/HEAD > /out\n", nil)
	out, errOut := e.local("-t", "g:1", ctx)
	wantFileContent(t, filepath.Join(out, "out"), "one\n"+v1+"\n")
	if strings.Contains(errOut, "detached HEAD") {
		t.Errorf("git's advice shown without BUILDKIT_GIT_ADVICE:\n%s", errOut)
	}
	// The same commit by another name and with --checksum: a cache hit
	// (keyed by the commit), whose history names this build's ADD.
	ctx2 := e.context("FROM busybox:fixture\nADD --keep-git-dir --checksum="+v1+" "+url+"?tag=v1 /repo\nRUN cat /repo/sub/foo /repo/.git/HEAD > /out\n", nil)
	m := e.build(ctx2, "-t", "g:2")
	m.wantCache(t, "", "ADD", "hit", "")
	m.wantCache(t, "", "RUN", "hit", "")
	hist, _ := e.mustRun("history", "--no-trunc", "g:2")
	if !strings.Contains(hist, "?tag=v1 /repo") {
		t.Errorf("history of a cache hit does not name this build's ADD:\n%s", hist)
	}
	if _, errOut, err := e.run("build", e.context("FROM scratch\nADD --checksum="+rev("HEAD")+" "+url+"#v1 /r\n", nil)); err == nil ||
		!strings.Contains(errOut, "expected checksum to match "+rev("HEAD")) {
		t.Errorf("ADD with a wrong --checksum: %v\n%s", err, errOut)
	}

	// A Git URL as the context: the ref's subdirectory, its Dockerfile,
	// and SOURCE_DATE_EPOCH=context from the commit.
	out, _ = e.local(url + "#v1:sub")
	wantFileContent(t, filepath.Join(out, "from-sub"), "one\n")
	out, _ = e.local("-f", "Dockerfile", url)
	wantFileContent(t, filepath.Join(out, "foo"), "two\n")
	e.mustRun("build", "-t", "epoch:1", "--build-arg", "SOURCE_DATE_EPOCH=context", url+"#v1")
	if info, _ := e.mustRun("inspect", "epoch:1"); !strings.Contains(info, "2023-11-14T22:15:01Z") {
		t.Errorf("SOURCE_DATE_EPOCH=context is not the commit time:\n%s", info)
	}
	if _, errOut, err := e.run("build", url+"#nope"); err == nil || !strings.Contains(errOut, "repository does not contain ref nope") {
		t.Errorf("missing ref: %v\n%s", err, errOut)
	}
	if _, errOut, err := e.run("build", url+"#--upload-pack=touch"); err == nil || !strings.Contains(errOut, "invalid git ref") {
		t.Errorf("option as ref: %v\n%s", err, errOut)
	}
}

func tarGz(t *testing.T, files map[string]string, mtime time.Time) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: mtime}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestE2EHTTPContext(t *testing.T) {
	e := newEnv(t)
	mtime := time.Unix(1700000302, 0)
	lastMod := time.Unix(1700000201, 0).UTC()
	archive := tarGz(t, map[string]string{"mydockerfile": "FROM scratch\nCOPY foo /bar\n", "foo": "foo-contents"}, mtime)
	mux := http.NewServeMux()
	mux.HandleFunc("/ctx.tar.gz", func(w http.ResponseWriter, r *http.Request) { w.Write(archive) })
	mux.HandleFunc("/lm.tar.gz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Last-Modified", lastMod.Format(http.TimeFormat))
		w.Write(archive)
	})
	mux.HandleFunc("/df", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("FROM busybox:fixture\nRUN echo -n from-url > /foo\n"))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	out, _ := e.local("-f", "mydockerfile", srv.URL+"/ctx.tar.gz")
	wantFileContent(t, filepath.Join(out, "bar"), "foo-contents")
	// A URL that serves no archive is the Dockerfile; -f does not apply.
	out, _ = e.local("-f", "ignored", srv.URL+"/df")
	wantFileContent(t, filepath.Join(out, "foo"), "from-url")
	for path, want := range map[string]string{"/lm.tar.gz": "2023-11-14T22:16:41Z", "/ctx.tar.gz": "2023-11-14T22:18:22Z"} {
		tag := "e" + strings.NewReplacer("/", "", ".", "").Replace(path)
		e.mustRun("build", "-t", tag, "-f", "mydockerfile", "--build-arg", "SOURCE_DATE_EPOCH=context", srv.URL+path)
		if info, _ := e.mustRun("inspect", tag); !strings.Contains(info, want) {
			t.Errorf("%s: SOURCE_DATE_EPOCH=context is not %s (Last-Modified, else the newest file):\n%s", path, want, info)
		}
	}
	if _, errOut, err := e.run("build", srv.URL+"/missing.tar"); err == nil || !strings.Contains(errOut, "404") {
		t.Errorf("404 context: %v\n%s", err, errOut)
	}
}

func TestE2EStdinContext(t *testing.T) {
	e := newEnv(t)
	stdinBuild := func(stdin []byte, args ...string) (string, string, error) {
		out, err := os.MkdirTemp(e.dir, "out-")
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(builderBin, append([]string{"--root", e.root, "build", "-o", "type=local,dest=" + out}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		b, err := cmd.CombinedOutput()
		return out, string(b), err
	}
	archive := tarGz(t, map[string]string{"Dockerfile": "FROM scratch\nCOPY foo /\n", "foo": "contents", "sub/Other": "FROM scratch\nCOPY foo /other\n"}, time.Unix(0, 0))
	out, msg, err := stdinBuild(archive, "-")
	if err != nil {
		t.Fatalf("build - < ctx.tar.gz: %v\n%s", err, msg)
	}
	wantFileContent(t, filepath.Join(out, "foo"), "contents")
	out, msg, err = stdinBuild(archive, "-f", "sub/Other", "-")
	if err != nil {
		t.Fatalf("build -f sub/Other - < ctx.tar.gz: %v\n%s", err, msg)
	}
	wantFileContent(t, filepath.Join(out, "other"), "contents")
	// Not an archive: a Dockerfile with an empty context, as docker build -.
	out, msg, err = stdinBuild([]byte("FROM busybox:fixture\nRUN echo -n df > /df\n"), "-")
	if err != nil {
		t.Fatalf("build - < Dockerfile: %v\n%s", err, msg)
	}
	wantFileContent(t, filepath.Join(out, "df"), "df")
	if _, msg, err = stdinBuild(archive, "-f", "-", "-"); err == nil || !strings.Contains(msg, "can't use stdin for both build context and dockerfile") {
		t.Errorf("-f - with a stdin context: %v\n%s", err, msg)
	}
	if _, msg, err = stdinBuild(archive, "-f", "../../etc/passwd", "-"); err == nil {
		t.Errorf("-f climbing out of the stdin context succeeded:\n%s", msg)
	}
}

func TestE2ENamedContextSources(t *testing.T) {
	e := newEnv(t)
	lastMod := time.Unix(1700000601, 0).UTC()
	archive := tarGz(t, map[string]string{"foo": "bar"}, time.Unix(1700000602, 0))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/lm.tar.gz" {
			w.Header().Set("Last-Modified", lastMod.Format(http.TimeFormat))
		}
		w.Write(archive)
	}))
	defer srv.Close()
	// An HTTP named context is the download as the file "context", not
	// extracted; its time is SOURCE_DATE_EPOCH=NAME's.
	for path, want := range map[string]string{"/lm.tar.gz": "2023-11-14T22:23:21Z", "/src.tar.gz": "2023-11-14T22:23:22Z"} {
		ctx := e.context("ARG SOURCE_DATE_EPOCH=src\nFROM scratch\nCOPY --from=src context /ctx.tgz\n", nil)
		tag := "n" + strings.NewReplacer("/", "", ".", "").Replace(path)
		out, _ := e.local("-t", tag, "--build-context", "src="+srv.URL+path, ctx)
		wantFileContent(t, filepath.Join(out, "ctx.tgz"), string(archive))
		if info, _ := e.mustRun("inspect", tag); !strings.Contains(info, want) {
			t.Errorf("%s: SOURCE_DATE_EPOCH=src is not %s:\n%s", path, want, info)
		}
	}

	// A Git named context is its checkout.
	url, _ := e.gitRepo("echo from-git > f && git add f && git commit -qm 1 && git tag v1")
	out, _ := e.local("--build-context", "src="+url+"#v1", e.context("FROM scratch\nCOPY --from=src f /f\n", nil))
	wantFileContent(t, filepath.Join(out, "f"), "from-git\n")

	// docker-image://scratch is the empty image.
	out, _ = e.local("--build-context", "busybox=docker-image://scratch", e.context("FROM busybox\nCOPY a /a\n", map[string]string{"a": "x"}))
	if ents, _ := os.ReadDir(out); len(ents) != 1 {
		t.Errorf("FROM the empty image holds %d entries, want only /a", len(ents))
	}

	// oci-layout://DIR@DIGEST and DIR:TAG: the layout's image, its config
	// included.
	layoutTar := filepath.Join(e.dir, "layout.tar")
	e.mustRun("build", "-t", "lay:v1", "-o", "type=oci,dest="+layoutTar, e.context("FROM busybox:fixture\nENV FOO=bar\nRUN echo -n first > /out\n", nil))
	layout := filepath.Join(e.dir, "layout")
	if err := os.MkdirAll(layout, 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("tar", "-xf", layoutTar, "-C", layout).CombinedOutput(); err != nil {
		t.Fatalf("untar layout: %v\n%s", err, b)
	}
	var index struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	if b, err := os.ReadFile(filepath.Join(layout, "index.json")); err != nil || json.Unmarshal(b, &index) != nil || len(index.Manifests) != 1 {
		t.Fatalf("layout index.json: %v %+v", err, index)
	}
	digest := index.Manifests[0].Digest
	for _, ref := range []string{layout + "@" + digest, layout + ":v1"} {
		out, _ = e.local("--build-context", "base=oci-layout://"+ref, e.context("FROM base\nRUN echo -n $FOO > /foo\n", nil))
		wantFileContent(t, filepath.Join(out, "out"), "first")
		wantFileContent(t, filepath.Join(out, "foo"), "bar")
	}
	if _, errOut, err := e.run("build", "--build-context", "base=oci-layout://"+layout+"@sha256:"+strings.Repeat("0", 64), e.context("FROM base\n", nil)); err == nil ||
		!strings.Contains(errOut, "no such image in the layout") {
		t.Errorf("missing layout digest: %v\n%s", err, errOut)
	}
}
