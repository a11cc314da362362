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
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/testenv"
)

// The tests in this file cover RUN --mount (cache, bind, tmpfs, secret, ssh) on
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

// runCachePath is the directory of the cache mount id; base is what
// else names it ("" for a plain cache, "\x00mkdir MODE UID:GID" for one
// with mode=, uid= or gid=: executor's cacheDirName).
func runCachePath(root, id, base string) string {
	sum := sha256.Sum256([]byte(id + base))
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
	if _, err := os.Stat(filepath.Join(runCachePath(e.root, "/cache", ""), "log")); err != nil {
		t.Errorf("cache directory of id /cache: %v", err)
	}
	if _, err := os.Stat(filepath.Join(runCachePath(e.root, "../../../../../escape", "\x00mkdir 700 1000:0"), "f")); err != nil {
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
			b, errs[i] = e.command(t.Context(), "--root", e.root, "build", "--progress", "plain", d).CombinedOutput()
			outs[i] = string(b)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("build %d: %v\n%s", i, err, outs[i])
		}
	}
	dir := runCachePath(e.root, "/c", "")
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
		"RUN --mount=type=ssh,source=/x true":                 "ssh does not support source",
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

// requireOpenSSH returns the paths of Debian's openssh-client tools the
// ssh test needs; it skips without them, and fails instead when CI=true.
func requireOpenSSH(t *testing.T) map[string]string {
	t.Helper()
	paths := map[string]string{}
	for _, tool := range []string{"ssh-keygen", "ssh-add", "ssh-agent", "ldd"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			testenv.SkipOrFail(t, "the test needs %s (apt-get install openssh-client)", tool)
		}
		paths[tool] = p
	}
	return paths
}

// copyWithLibs copies the host binary bin and the shared libraries ldd
// lists for it into root, at their host paths, so it runs in an image
// made from root.
func copyWithLibs(t *testing.T, ldd, bin, root string) {
	t.Helper()
	out, err := exec.Command(ldd, bin).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", bin, err)
	}
	files := []string{bin}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "/") {
			files = append(files, f)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// sshKey makes an ed25519 key with ssh-keygen and returns the key file,
// its SHA256 fingerprint and the private key's base64 body.
func sshKey(t *testing.T, keygen, dir, name string) (string, string, string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", p).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	out, err := exec.Command(keygen, "-l", "-E", "sha256", "-f", p+".pub").Output()
	if err != nil {
		t.Fatalf("ssh-keygen -l: %v", err)
	}
	priv, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(priv)), "\n")
	return p, strings.Fields(string(out))[1], strings.Join(lines[1:len(lines)-1], "")
}

// startAgent runs ssh-agent on sock in the foreground, holding key.
func startAgent(t *testing.T, tools map[string]string, sock, key string, u *e2eUser) {
	t.Helper()
	agent := exec.Command(tools["ssh-agent"], "-D", "-a", sock)
	if u != nil {
		u.apply(agent) // ssh-agent serves only its own uid
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = agent.Process.Kill()
		_ = agent.Wait()
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		} else if i == 100 {
			t.Fatalf("ssh-agent made no socket: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	add := exec.Command(tools["ssh-add"], key)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if u != nil {
		add.Env = []string{"SSH_AUTH_SOCK=" + sock}
		u.apply(add)
	}
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v\n%s", err, out)
	}
}

// sshFingerprints are the fingerprints in `ssh-add -l` output.
func sshFingerprints(out string) []string {
	var fps []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			fps = append(fps, f[1])
		}
	}
	return fps
}

// RUN --mount=type=ssh with Debian's openssh-client: keys made by
// ssh-keygen reach `ssh-add -l` in a RUN as key files (--ssh ID=KEY,KEY,
// an agent the builder serves) and through the host's ssh-agent (--ssh
// default with SSH_AUTH_SOCK, and --ssh default=SOCKET), at BuildKit's
// default socket /run/buildkit/ssh_agent.0 or a target, SSH_AUTH_SOCK
// pointing at it. The keys are not in the cache key (another key set
// hits), and neither they nor the socket reach a layer, the history or
// the store. A required agent that is not given fails naming the line.
func TestE2ERunMountSSH(t *testing.T) {
	tools := requireOpenSSH(t)
	e := newEnv(t)
	keys := t.TempDir()
	k1, fp1, body1 := sshKey(t, tools["ssh-keygen"], keys, "k1")
	k2, fp2, body2 := sshKey(t, tools["ssh-keygen"], keys, "k2")
	k3, fp3, body3 := sshKey(t, tools["ssh-keygen"], keys, "k3")
	sock := filepath.Join(keys, "agent.sock")
	e.share(keys)
	e.own(keys)
	startAgent(t, tools, sock, k3, e.user)
	df := "FROM busybox:fixture\n" +
		"COPY sshadd/ /\n" +
		"RUN --mount=type=ssh,id=keys,required ssh-add -l > /keys && echo \"$SSH_AUTH_SOCK\" > /sock\n" +
		"RUN --mount=type=ssh,required,target=/root/agent.sock,uid=1000 ssh-add -l > /agent && echo \"$SSH_AUTH_SOCK\" >> /agent\n"
	ctx := e.context(df, nil)
	copyWithLibs(t, tools["ldd"], tools["ssh-add"], filepath.Join(ctx, "sshadd"))
	build := func(name string, env []string, flags ...string) *imageLayers {
		t.Helper()
		dest := filepath.Join(e.dir, name+".tar")
		args := append([]string{"build", "--progress", "plain", "-t", "ssh:" + name, "-o", "type=docker,dest=" + dest}, flags...)
		e.mustRunEnv(env, append(args, ctx)...)
		return readImage(t, dest)
	}
	check := func(img *imageLayers, wantKeys []string, wantAgent string) {
		t.Helper()
		if got := sshFingerprints(treeContent(t, img.tree, "/keys")); !slices.Equal(got, wantKeys) {
			t.Errorf("ssh-add -l through id keys: %v, want %v", got, wantKeys)
		}
		if got := treeContent(t, img.tree, "/sock"); got != "/run/buildkit/ssh_agent.0\n" {
			t.Errorf("SSH_AUTH_SOCK %q", got)
		}
		want := "256 " + wantAgent + " k3 (ED25519)\n/root/agent.sock\n"
		if got := treeContent(t, img.tree, "/agent"); got != want {
			t.Errorf("ssh-add -l through the host agent: %q, want %q", got, want)
		}
		checkNoMountStubs(t, img)
		for i, l := range img.layers[1:] {
			if _, ok := l["root/agent.sock"]; ok {
				t.Errorf("RUN layer %d holds the socket's mount point", i+1)
			}
		}
	}
	img := build("1", []string{"SSH_AUTH_SOCK=" + sock}, "--ssh", "keys="+k1+","+k2, "--ssh", "default")
	check(img, []string{fp1, fp2}, fp3)
	img = build("2", nil, "--no-cache", "--ssh", "keys="+k2, "--ssh", "default="+sock)
	check(img, []string{fp2}, fp3)
	// Other keys do not change the key: cached, the last build's keys.
	img = build("3", nil, "--ssh", "keys="+k1, "--ssh", "default="+sock)
	check(img, []string{fp2}, fp3)

	hist, _ := e.mustRun("history", "--no-trunc", "--format", "json", "ssh:1")
	files := []string{}
	filepath.WalkDir(e.root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	for _, s := range []string{body1, body2, body3, sock, keys} {
		if strings.Contains(hist, s) {
			t.Errorf("history contains %q", s)
		}
		for _, p := range files {
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(s)) {
				t.Errorf("%s contains %q", p, s)
			}
		}
	}
	// Required and not given: BuildKit's errors, naming the line.
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{nil, `no SSH key "keys" forwarded from the client`},
		{[]string{"--ssh", "other=" + k1}, "unset ssh forward key keys"},
	} {
		_, errOut, err := e.run(append(append([]string{"build", "--progress", "plain", "--no-cache"}, c.flags...), ctx)...)
		if err == nil || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "Dockerfile:3") {
			t.Errorf("--ssh %v: err %v, want %q naming Dockerfile:3:\n%s", c.flags, err, c.want, errOut)
		}
	}
}
