package main

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The tests in this file cover RUN --mount (cache, bind, tmpfs, secret) on
// the real binary: what the command sees, that nothing of a mount reaches
// a layer (not even its mount point), and RELIABILITY RUN-05 / RUN-09.

// mountStubs are the paths the mounts of these tests use; no RUN layer may
// hold them.
var mountStubs = []string{"cache", "c", "ctx", "s", "up", "in", "esc", "scratch", "run", "run/secrets", "run/secrets/mysecret", "x/y"}

func checkNoMountStubs(t *testing.T, img *imageLayers) {
	t.Helper()
	checkStubsAbsent(t, img)
	for i, l := range img.layers[1:] {
		for _, n := range mountStubs {
			if _, ok := l[n]; ok {
				t.Errorf("RUN layer %d contains mount point %s: %v", i+1, n, names(l))
			}
		}
	}
}

func runCachePath(root, id string) string {
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(root, "runcache", hex.EncodeToString(sum[:]))
}

// A cache mount keeps its content across builds, is not in the image, and
// its content is not part of the key (a rebuild hits) while its spec is.
// Hostile ids stay inside the store's runcache directory.
func TestE2ERunMountCache(t *testing.T) {
	e := newEnv(t)
	df := "FROM busybox:fixture\nARG BUST\n" +
		"RUN --mount=type=cache,target=/cache echo x >> /cache/log && wc -l < /cache/log > /count\n" +
		"RUN --mount=type=cache,target=/x/y,id=../../../../../escape,mode=0700,uid=1000 ls -lnd /x/y | cut -c1-10,15-20 > /perm && touch /x/y/f\n"
	ctx := e.context(df, nil)
	img := readImage(t, e.buildTar(ctx, "one"))
	if got := strings.TrimSpace(treeContent(t, img.tree, "/count")); got != "1" {
		t.Errorf("first build: count %q, want 1", got)
	}
	if got := treeContent(t, img.tree, "/perm"); !strings.HasPrefix(got, "drwx------") || !strings.Contains(got, "1000") {
		t.Errorf("cache dir mode/owner: %q", got)
	}
	checkNoMountStubs(t, img)
	// A miss (not --no-cache, which starts caches afresh) runs again.
	img = readImage(t, e.buildTar(ctx, "two", "--build-arg", "BUST=2"))
	if got := strings.TrimSpace(treeContent(t, img.tree, "/count")); got != "2" {
		t.Errorf("second build: count %q, want 2 (cache content kept)", got)
	}
	if _, err := os.Stat(filepath.Join(runCachePath(e.root, "/cache"), "log")); err != nil {
		t.Errorf("cache directory of id /cache: %v", err)
	}
	if _, err := os.Stat(filepath.Join(runCachePath(e.root, "../../../../../escape"), "f")); err != nil {
		t.Errorf("hostile id not confined to runcache: %v", err)
	}
	for _, p := range []string{filepath.Join(e.dir, "escape"), filepath.Join(e.root, "escape"), "/escape", filepath.Join(filepath.Dir(e.dir), "escape")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("cache id escaped to %s", p)
		}
	}
	// Content is not part of the key: the cache changed, the step hits.
	m := e.build(ctx)
	m.wantAllHits(t)
	// The spec is: another sharing mode misses.
	ctx2 := e.context(strings.Replace(df, "target=/cache", "target=/cache,sharing=private", 1), nil)
	m = e.build(ctx2)
	m.wantCache(t, "", "RUN --mount=type=cache,target=/cache", "miss", "")
}

// sharing=locked serialises two builds using the same cache: no step sees
// another inside the cache at the same time.
func TestE2ERunMountCacheLocked(t *testing.T) {
	e := newEnv(t)
	run := "RUN --mount=type=cache,target=/c,sharing=locked " +
		"if [ -e /c/busy ]; then echo overlap >> /c/overlap; fi; touch /c/busy; sleep 1; rm /c/busy; echo $N >> /c/runs\n"
	var dirs []string
	for i := range 2 {
		dirs = append(dirs, e.context("FROM busybox:fixture\nARG N="+string(rune('a'+i))+"\n"+run, nil))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(dirs))
	outs := make([]string, len(dirs))
	for i, d := range dirs {
		wg.Go(func() {
			var b []byte
			b, errs[i] = exec.CommandContext(t.Context(), builderBin, "--root", e.root, "build", "--progress", "plain", d).CombinedOutput()
			outs[i] = string(b)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("build %d: %v\n%s", i, err, outs[i])
		}
	}
	dir := runCachePath(e.root, "/c")
	if b, err := os.ReadFile(filepath.Join(dir, "overlap")); err == nil {
		t.Errorf("locked cache used concurrently: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "runs")); len(strings.Fields(string(b))) != 2 {
		t.Errorf("runs %q, want two lines", b)
	}
}

// Bind mounts of the build context: .dockerignore applies, the source is
// confined to the context, writes of rw mounts are discarded, nothing is
// left in the layers, and the bound files are part of the key.
func TestE2ERunMountBindContext(t *testing.T) {
	e := newEnv(t)
	df := "FROM busybox:fixture\n" +
		"RUN --mount=type=bind,target=/ctx ls /ctx > /list && (touch /ctx/new 2>/dev/null || echo ro > /ro)\n" +
		"RUN --mount=type=bind,source=sub,target=/s,rw echo new > /s/new && cat /s/b.txt > /b && rm /s/b.txt\n" +
		"RUN --mount=type=bind,source=../../..,target=/up ls /up > /uplist\n" +
		"RUN --mount=type=bind,source=link/b.txt,target=/in cat /in > /vialink\n"
	ctx := e.context(df, map[string]string{"a.txt": "a", "sub/b.txt": "b1", "ignored.txt": "no", ".dockerignore": "ignored.txt\n"})
	if err := os.Symlink("../../../../../../sub", filepath.Join(ctx, "link")); err != nil {
		t.Fatal(err)
	}
	img := readImage(t, e.buildTar(ctx, "bind"))
	list := treeContent(t, img.tree, "/list")
	if strings.Contains(list, "ignored.txt") || !strings.Contains(list, "a.txt") || !strings.Contains(list, "sub") {
		t.Errorf("context bind lists %q: want a.txt and sub, not ignored.txt", list)
	}
	if treeContent(t, img.tree, "/ro") != "ro\n" {
		t.Errorf("bind mount is writable by default")
	}
	if treeContent(t, img.tree, "/b") != "b1" || treeContent(t, img.tree, "/vialink") != "b1" {
		t.Errorf("bound file content wrong")
	}
	if got := treeContent(t, img.tree, "/uplist"); got != list {
		t.Errorf("source=../../.. lists %q, want the context root %q", got, list)
	}
	for _, p := range []string{"sub/new", "new"} {
		if _, err := os.Stat(filepath.Join(ctx, p)); err == nil {
			t.Errorf("rw bind wrote %s into the context", p)
		}
	}
	if _, err := os.Stat(filepath.Join(ctx, "sub/b.txt")); err != nil {
		t.Errorf("rw bind removed a context file: %v", err)
	}
	checkNoMountStubs(t, img)
	e.build(ctx).wantAllHits(t)
	e.write(ctx, "sub/b.txt", "b2")
	m := e.build(ctx)
	m.wantCache(t, "", "RUN --mount=type=bind,source=sub", "miss", "b.txt")
	m.wantCache(t, "", "RUN --mount=type=bind,target=/ctx", "miss", "b.txt")
	e.write(ctx, "ignored.txt", "changed")
	e.build(ctx).wantAllHits(t)
}

// Bind mounts from a stage: the stage's files, symlinks resolved inside
// the stage's root (RUN-09), nothing in the layers.
func TestE2ERunMountBindStage(t *testing.T) {
	e := newEnv(t)
	df := "FROM busybox:fixture AS build\n" +
		"RUN mkdir /out && echo built > /out/artifact && echo stage > /marker && ln -s ../../../../../../ /out/esc\n" +
		"FROM busybox:fixture\n" +
		"RUN --mount=type=bind,from=build,source=/out,target=/in cat /in/artifact > /got\n" +
		"RUN --mount=type=bind,from=build,source=/out/esc,target=/esc cat /esc/marker > /marker2\n"
	img := readImage(t, e.buildTar(e.context(df, nil), "stage"))
	if treeContent(t, img.tree, "/got") != "built\n" || treeContent(t, img.tree, "/marker2") != "stage\n" {
		t.Errorf("stage bind content wrong")
	}
	if _, ok := img.tree["/out"]; ok {
		t.Errorf("stage files leaked into the image")
	}
	checkNoMountStubs(t, img)
}

func TestE2ERunMountTmpfs(t *testing.T) {
	e := newEnv(t)
	df := "FROM busybox:fixture\nRUN --mount=type=tmpfs,target=/scratch,size=1m echo x > /scratch/f && cat /scratch/f > /t && grep /scratch /proc/mounts | cut -d' ' -f3,4 > /m\n"
	img := readImage(t, e.buildTar(e.context(df, nil), "tmpfs"))
	if treeContent(t, img.tree, "/t") != "x\n" {
		t.Errorf("tmpfs content wrong")
	}
	if m := treeContent(t, img.tree, "/m"); !strings.HasPrefix(m, "tmpfs") || !strings.Contains(m, "size=1024k") {
		t.Errorf("mount line %q, want a 1m tmpfs", m)
	}
	checkNoMountStubs(t, img)
}

// Secrets from a file and from an environment variable reach the command
// and nothing else: not the image, its history, the build record, the
// metadata file or anywhere in the store.
func TestE2ERunMountSecret(t *testing.T) {
	e := newEnv(t)
	const fileSecret, envSecret = "S3cr3t-from-file-7f1c", "S3cr3t-from-env-93ab"
	src := e.write(e.dir, "secret.txt", fileSecret)
	df := "FROM busybox:fixture\n" +
		"RUN --mount=type=secret,id=mysecret md5sum < /run/secrets/mysecret > /sum && ls -ln /run/secrets/mysecret | cut -c1-10 > /perm\n" +
		"RUN --mount=type=secret,id=tok,env=TOKEN,required echo -n \"$TOKEN\" | md5sum > /envsum\n" +
		"RUN --mount=type=secret,id=absent ls /run/secrets > /absent 2>&1 || echo none > /absent\n"
	ctx := e.context(df, nil)
	meta := filepath.Join(e.dir, "secret-meta.json")
	tarPath := filepath.Join(e.dir, "secret.tar")
	e.mustRunEnv([]string{"E2E_TOKEN=" + envSecret}, "build", "--progress", "plain", "--metadata-file", meta, "-t", "sec:1",
		"-o", "type=docker,dest="+tarPath, "--secret", "id=mysecret,src="+src, "--secret", "id=tok,env=E2E_TOKEN", ctx)
	img := readImage(t, tarPath)
	if got, want := treeContent(t, img.tree, "/sum"), md5hex(fileSecret)+"  -\n"; got != want {
		t.Errorf("file secret: md5 %q, want %q", got, want)
	}
	if got, want := treeContent(t, img.tree, "/envsum"), md5hex(envSecret)+"  -\n"; got != want {
		t.Errorf("env secret: md5 %q, want %q", got, want)
	}
	if got := treeContent(t, img.tree, "/perm"); got != "-r--------\n" {
		t.Errorf("secret file mode %q", got)
	}
	if got := treeContent(t, img.tree, "/absent"); got != "none\n" {
		t.Errorf("optional missing secret: %q", got)
	}
	checkNoMountStubs(t, img)
	hist, _ := e.mustRun("history", "--no-trunc", "--format", "json", "sec:1")
	files := []string{tarPath, meta}
	filepath.WalkDir(e.root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	for _, s := range []string{fileSecret, envSecret} {
		if strings.Contains(hist, s) {
			t.Errorf("history contains secret %q", s)
		}
		for _, p := range files {
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(s)) {
				t.Errorf("%s contains secret %q", p, s)
			}
		}
	}
	// A required secret that is not given fails the build clearly.
	_, errOut, err := e.run("build", "--no-cache", "--secret", "id=mysecret,src="+src, ctx)
	if err == nil || !strings.Contains(errOut, "secret tok: not found") {
		t.Errorf("missing required secret: err %v, stderr:\n%s", err, errOut)
	}
}

// Invalid mounts are rejected with a clear error (RUN-05).
func TestE2ERunMountInvalid(t *testing.T) {
	e := newEnv(t)
	for run, want := range map[string]string{
		"RUN --mount=type=cache,target=/c,sharing=shard true": `unsupported sharing value "shard"`,
		"RUN --mount=type=bogus,target=/c true":               `unsupported mount type "bogus"`,
		"RUN --mount=type=ssh true":                           "ssh mounts are not supported",
		"RUN --mount=type=cache,target=/c,foo=bar true":       "unexpected key 'foo'",
		"RUN --mount=type=bind true":                          "target is required",
		"RUN --mount=type=bind,target=/c,from=nosuch true":    "nosuch",
	} {
		_, errOut, err := e.run("build", "--progress", "plain", e.context("FROM busybox:fixture\n"+run+"\n", nil))
		if err == nil || !strings.Contains(errOut, want) {
			t.Errorf("%s: err %v, want %q in:\n%s", run, err, want, errOut)
		}
	}
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestE2ERunMountCacheNoCache: a --no-cache build starts each cache mount
// afresh, and the builds after it share that new content (BuildKit
// testCacheMountModeNoCache).
func TestE2ERunMountCacheNoCache(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nARG FOO=abc\nRUN --mount=type=cache,target=/cache,mode=0773 touch /cache/$FOO && ls /cache > /out\n", nil)
	for _, b := range []struct {
		args []string
		want string
	}{
		{nil, "abc\n"},
		{[]string{"--no-cache", "--build-arg", "FOO=def"}, "def\n"},
		{[]string{"--build-arg", "FOO=ghi"}, "def\nghi\n"},
	} {
		out := filepath.Join(e.dir, "out-"+b.want[:3])
		e.mustRun(append(append([]string{"build", "--network", "none", "-o", "type=local,dest=" + out}, b.args...), ctx)...)
		if got, err := os.ReadFile(filepath.Join(out, "out")); err != nil || string(got) != b.want {
			t.Errorf("build %v: /out = %q, %v; want %q", b.args, got, err, b.want)
		}
	}
}
