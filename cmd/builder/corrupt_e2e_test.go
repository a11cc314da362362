package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/builder-dev/builder/fixtures"
)

// TestE2ECorruption damages one kind of file of the store in one way
// (flip a byte, truncate, delete), then runs what a user would: fsck, then
// images, history, inspect, save, build with OCI and docker exports and a
// local cache export, push and save again. Each command must either
// succeed with a correct result (every exported or pushed image validates
// and has the right files) or fail with an error naming what is damaged,
// what needs it and what to do, leaving no output behind; never a panic
// or a misleading message. Then the store must recover by doing what the
// messages said (fsck --repair, load the base image again): a build and a
// save succeed and fsck finds nothing.
func TestE2ECorruption(t *testing.T) {
	f := newCorruptFixture(t)
	var mu sync.Mutex
	outcomes := map[string][]string{}
	t.Run("matrix", func(t *testing.T) {
		for _, k := range corruptKinds {
			for _, m := range corruptModes {
				t.Run(k.name+"/"+m.name, func(t *testing.T) {
					t.Parallel()
					c := f.cell(t, k, m)
					c.exercise()
					mu.Lock()
					outcomes[k.name+"/"+m.name] = c.outcomes
					mu.Unlock()
				})
			}
		}
	})
	names := make([]string, 0, len(outcomes))
	for n := range outcomes {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s:\n    %s\n", n, strings.Join(outcomes[n], "\n    "))
	}
	t.Logf("outcomes:\n%s", b.String())
}

const corruptDockerfile = "FROM busybox:fixture\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n"

// corruptFixture is a template store every cell copies: busybox:fixture
// loaded from a docker archive (blobs plus unpacked layers, as a pulled
// image), and app:1 built on it with its gzip layers made by --cache-to.
type corruptFixture struct {
	dir     string
	root    string // the template store
	app     string // build context of app:1
	baseTar string // busybox:fixture as `builder save` wrote it
	busybox []byte // /bin/busybox of the base image

	// hex digests
	baseManifest, baseConfig, baseLayer string
	appManifest, appConfig              string
	runLayer, runGzip, runKey           string
	buildRecord                         string // file name in builds/
}

func newCorruptFixture(t *testing.T) *corruptFixture {
	t.Helper()
	e := newEnv(t)
	f := &corruptFixture{dir: e.dir, root: filepath.Join(e.dir, "golden"), baseTar: filepath.Join(e.dir, "base.tar")}
	f.app = e.context(corruptDockerfile, map[string]string{"a.txt": "a\n"})
	var err error
	if f.busybox, err = os.ReadFile(fixtures.HostBusybox); err != nil {
		t.Fatal(err)
	}
	e.mustRun("save", "-o", f.baseTar, "busybox:fixture")
	g := &e2eEnv{t: t, root: f.root, dir: e.dir}
	g.mustRun("load", "-i", f.baseTar)
	time.Sleep(150 * time.Millisecond) // older than the memo's racy window
	m := g.build(f.app, "-t", "app:1", "--cache-to", "type=local,dest="+filepath.Join(e.dir, "cache0"))
	f.runKey = strings.TrimPrefix(m.step(t, "", "RUN").Key, "sha256:")
	f.runLayer = strings.TrimPrefix(m.step(t, "", "RUN").Layer, "sha256:")

	inspect := func(ref string) (manifest, config string, layers []string) {
		out, _ := g.mustRun("inspect", ref)
		var v struct {
			Digest   string `json:"digest"`
			Manifest struct {
				Config struct{ Digest string }   `json:"config"`
				Layers []struct{ Digest string } `json:"layers"`
			} `json:"manifest"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("inspect %s: %v\n%s", ref, err, out)
		}
		for _, l := range v.Manifest.Layers {
			layers = append(layers, strings.TrimPrefix(l.Digest, "sha256:"))
		}
		return strings.TrimPrefix(v.Digest, "sha256:"), strings.TrimPrefix(v.Manifest.Config.Digest, "sha256:"), layers
	}
	var baseLayers []string
	f.baseManifest, f.baseConfig, baseLayers = inspect("busybox:fixture")
	f.appManifest, f.appConfig, _ = inspect("app:1")
	if len(baseLayers) != 1 {
		t.Fatalf("base image has %d layers, want 1", len(baseLayers))
	}
	f.baseLayer = baseLayers[0]
	for _, p := range []string{"blobs/sha256/" + f.baseLayer, "snapshots/" + f.baseLayer + "/layer.json"} {
		if _, err := os.Stat(filepath.Join(f.root, p)); err != nil {
			t.Fatalf("the loaded base layer is not both a blob and an unpacked layer: %v", err)
		}
	}
	var rec struct{ Digest string }
	data, err := os.ReadFile(filepath.Join(f.root, "compressed", f.runLayer+".json"))
	if err != nil || json.Unmarshal(data, &rec) != nil {
		t.Fatalf("no compressed record of the RUN layer: %v %s", err, data)
	}
	f.runGzip = strings.TrimPrefix(rec.Digest, "sha256:")
	builds, _ := filepath.Glob(filepath.Join(f.root, "builds", "*.json"))
	if len(builds) != 1 {
		t.Fatalf("want one build record, got %v", builds)
	}
	f.buildRecord = filepath.Base(builds[0])
	if memos, _ := filepath.Glob(filepath.Join(f.root, "hashes", "*.memo")); len(memos) == 0 {
		t.Fatalf("the build wrote no hash memo")
	}
	return f
}

// newRegistry starts an in-process registry for one cell, so a push
// uploads every blob (a registry that has a blob is not sent it again).
func newRegistry(t *testing.T) string {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// corruptKind is one kind of stored file.
type corruptKind struct {
	name string
	// targets are the files to damage, relative to the store root.
	targets func(f *corruptFixture) []string
	// A failing command's stderr must contain one of names (the damaged
	// thing), one of needs (what needs it) and one of advice (what to do).
	names, needs, advice func(f *corruptFixture) []string
	// absentIsNormal: a store without the file is consistent (a cache
	// miss, an uncompressed layer, an unhashed file), so fsck may find
	// nothing wrong when it is deleted.
	absentIsNormal bool
}

func list(s ...string) func(*corruptFixture) []string {
	return func(*corruptFixture) []string { return s }
}

var (
	appNeeds      = list("app:1", "RUN /bin/sh -c cat /a.txt", "Dockerfile:3")
	baseNeeds     = list("busybox:fixture")
	builtAdvice   = list("builder build", "next build rebuilds", "builder fsck --repair")
	baseAdvice    = list("builder pull busybox:fixture", "builder load")
	appImgAdvice  = list("builder build", "builder rmi app:1")
	indexAdvice   = list("builder fsck --repair")
	noNeedsExpect = list("<a command failed where none should>")
)

var corruptKinds = []corruptKind{
	{
		name:    "built-layer-content",
		targets: func(f *corruptFixture) []string { return []string{"snapshots/" + f.runLayer + "/fs/b.txt"} },
		names:   func(f *corruptFixture) []string { return []string{f.runLayer} },
		needs:   appNeeds, advice: builtAdvice,
	},
	{
		name:    "built-layer-meta",
		targets: func(f *corruptFixture) []string { return []string{"snapshots/" + f.runLayer + "/layer.json"} },
		names:   func(f *corruptFixture) []string { return []string{f.runLayer} },
		needs:   appNeeds, advice: builtAdvice,
	},
	{
		name:    "built-layer-gzip",
		targets: func(f *corruptFixture) []string { return []string{"blobs/sha256/" + f.runGzip} },
		names:   func(f *corruptFixture) []string { return []string{f.runGzip, f.runLayer} },
		needs:   appNeeds, advice: list("again", "builder fsck --repair"),
	},
	{
		name:    "compressed-record",
		targets: func(f *corruptFixture) []string { return []string{"compressed/" + f.runLayer + ".json"} },
		names:   func(f *corruptFixture) []string { return []string{f.runLayer} },
		needs:   appNeeds, advice: list("again", "builder fsck --repair"),
		absentIsNormal: true,
	},
	{
		name:    "base-layer-blob",
		targets: func(f *corruptFixture) []string { return []string{"blobs/sha256/" + f.baseLayer} },
		names:   func(f *corruptFixture) []string { return []string{f.baseLayer} },
		needs:   baseNeeds, advice: baseAdvice,
	},
	{
		name:    "base-layer-unpacked",
		targets: func(f *corruptFixture) []string { return []string{"snapshots/" + f.baseLayer + "/fs/bin/busybox"} },
		names:   func(f *corruptFixture) []string { return []string{f.baseLayer} },
		needs:   baseNeeds, advice: list("builder pull busybox:fixture", "builder load", "builder fsck --repair"),
	},
	{
		name:    "base-layer-meta",
		targets: func(f *corruptFixture) []string { return []string{"snapshots/" + f.baseLayer + "/layer.json"} },
		names:   func(f *corruptFixture) []string { return []string{f.baseLayer} },
		needs:   baseNeeds, advice: list("builder pull busybox:fixture", "builder load", "builder fsck --repair"),
	},
	{
		name:    "base-config",
		targets: func(f *corruptFixture) []string { return []string{"blobs/sha256/" + f.baseConfig} },
		names:   func(f *corruptFixture) []string { return []string{f.baseConfig} },
		needs:   baseNeeds, advice: baseAdvice,
	},
	{
		name:    "base-manifest",
		targets: func(f *corruptFixture) []string { return []string{"blobs/sha256/" + f.baseManifest} },
		names:   func(f *corruptFixture) []string { return []string{f.baseManifest} },
		needs:   baseNeeds, advice: baseAdvice,
	},
	{
		name:    "image-config",
		targets: func(f *corruptFixture) []string { return []string{"blobs/sha256/" + f.appConfig} },
		names:   func(f *corruptFixture) []string { return []string{f.appConfig} },
		needs:   list("app:1"), advice: appImgAdvice,
	},
	{
		name:    "image-manifest",
		targets: func(f *corruptFixture) []string { return []string{"blobs/sha256/" + f.appManifest} },
		names:   func(f *corruptFixture) []string { return []string{f.appManifest} },
		needs:   list("app:1"), advice: appImgAdvice,
	},
	{
		name:    "key-record",
		targets: func(f *corruptFixture) []string { return []string{"keys/" + f.runKey + ".json"} },
		names:   func(f *corruptFixture) []string { return []string{f.runKey} },
		needs:   noNeedsExpect, advice: noNeedsExpect,
		absentIsNormal: true,
	},
	{
		name:    "build-record",
		targets: func(f *corruptFixture) []string { return []string{"builds/" + f.buildRecord} },
		names:   func(f *corruptFixture) []string { return []string{strings.TrimSuffix(f.buildRecord, ".json")} },
		needs:   noNeedsExpect, advice: noNeedsExpect,
	},
	{
		name: "hash-memo",
		targets: func(f *corruptFixture) []string {
			memos, _ := filepath.Glob(filepath.Join(f.root, "hashes", "*.memo"))
			var out []string
			for _, m := range memos {
				out = append(out, "hashes/"+filepath.Base(m))
			}
			return out
		},
		names: list("hashes/"), needs: noNeedsExpect, advice: noNeedsExpect,
		absentIsNormal: true,
	},
	{
		name:    "tag-index",
		targets: list("images/index.json"),
		names:   list("images/index.json"), needs: list("index.json"), advice: indexAdvice,
	},
}

type corruptMode struct {
	name  string
	apply func(t *testing.T, p string)
}

var corruptModes = []corruptMode{
	{"flip", flipByte},
	{"truncate", func(t *testing.T, p string) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}},
	{"delete", func(t *testing.T, p string) {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}},
}

// corruptCell is one cell of the matrix: a copy of the template store with
// one kind of file damaged in one way.
type corruptCell struct {
	t        *testing.T
	f        *corruptFixture
	k        corruptKind
	m        corruptMode
	e        *e2eEnv
	dir      string
	outcomes []string
	stderrs  strings.Builder // everything the commands said, for the advice
}

func (f *corruptFixture) cell(t *testing.T, k corruptKind, m corruptMode) *corruptCell {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if out, err := exec.Command("cp", "-a", f.root, root).CombinedOutput(); err != nil {
		t.Fatalf("copy the template store: %v\n%s", err, out)
	}
	c := &corruptCell{t: t, f: f, k: k, m: m, dir: dir, e: &e2eEnv{t: t, root: root, dir: dir}}
	targets := k.targets(f)
	if len(targets) == 0 {
		t.Fatalf("no file of kind %s", k.name)
	}
	for _, p := range targets {
		m.apply(t, filepath.Join(root, p))
	}
	return c
}

// result is what one command did.
type result struct {
	args           []string
	code           int
	stdout, stderr string
}

func (r result) failed() bool { return r.code != 0 }

// run runs one command and checks what every command must do.
func (c *corruptCell) run(args ...string) result {
	c.t.Helper()
	stdout, stderr, err := c.e.run(args...)
	r := result{args: args, stdout: stdout, stderr: stderr}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			c.t.Fatalf("builder %s: %v", strings.Join(args, " "), err)
		}
		r.code = ee.ExitCode()
	}
	c.stderrs.WriteString(stderr)
	c.stderrs.WriteString(stdout)
	for _, bad := range []string{"panic:", "goroutine ", "not in the local image store", "not reproducible", "cache: not found"} {
		if strings.Contains(stderr, bad) {
			c.t.Errorf("builder %s: stderr contains %q:\n%s", strings.Join(args, " "), bad, stderr)
		}
	}
	what := "ok"
	if r.failed() {
		what = fmt.Sprintf("exit %d: %s", r.code, lastErrorLine(stderr))
	}
	if args[0] == "fsck" {
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		what = fmt.Sprintf("exit %d: %s", r.code, strings.Join(lines[:len(lines)-1], " | "))
	}
	c.outcomes = append(c.outcomes, fmt.Sprintf("%-8s %s", args[0], what))
	return r
}

func lastErrorLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "ERROR") || strings.HasPrefix(lines[i], "WARNING") || strings.Contains(lines[i], "problem") {
			return lines[i]
		}
	}
	return lines[len(lines)-1]
}

// wantNamed checks a failed command's message: it names the damaged thing,
// what needs it and what to do.
func (c *corruptCell) wantNamed(r result) {
	c.t.Helper()
	msg := r.stderr
	for _, want := range []struct {
		what string
		any  []string
	}{{"the damaged file or digest", c.k.names(c.f)}, {"what needs it", c.k.needs(c.f)}, {"what to do", c.k.advice(c.f)}} {
		found := false
		for _, s := range want.any {
			found = found || strings.Contains(msg, s)
		}
		if !found {
			c.t.Errorf("builder %s failed without naming %s (one of %q):\n%s", strings.Join(r.args, " "), want.what, want.any, msg)
		}
	}
}

// wantNoFile checks that a failed export left nothing at dest.
func (c *corruptCell) wantNoFile(r result, dest string) {
	c.t.Helper()
	if _, err := os.Lstat(dest); err == nil {
		c.t.Errorf("builder %s failed but left %s", strings.Join(r.args, " "), dest)
	}
}

func (c *corruptCell) exercise() {
	t, f := c.t, c.f
	before := treeDigest(t, c.e.root)
	r := c.run("fsck")
	switch {
	case r.failed():
		c.wantNamedFsck(r)
	case c.m.name == "delete" && c.k.absentIsNormal:
		// A store without this file is a store that never had it.
	default:
		t.Errorf("fsck found nothing wrong:\n%s", r.stdout)
	}
	if after := treeDigest(t, c.e.root); after != before {
		t.Errorf("fsck without --repair changed the store")
	}

	if r := c.run("images"); r.failed() {
		c.wantNamed(r)
	} else {
		for _, w := range []string{"busybox", "fixture", "app"} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("images does not list %q:\n%s", w, r.stdout)
			}
		}
	}
	if r := c.run("history", "app:1"); r.failed() {
		c.wantNamed(r)
	} else if !strings.Contains(r.stdout, "RUN /bin/sh -c cat") {
		t.Errorf("history lacks the RUN step:\n%s", r.stdout)
	}
	if r := c.run("inspect", "app:1"); r.failed() {
		c.wantNamed(r)
	} else if !json.Valid([]byte(r.stdout)) {
		t.Errorf("inspect printed invalid JSON:\n%s", r.stdout)
	}
	c.save("save1")

	oci := filepath.Join(c.dir, "out.oci.tar")
	if r := c.run("build", "--progress", "plain", "-t", "app:1", "-o", "type=oci,dest="+oci, f.app); r.failed() {
		c.wantNamed(r)
		c.wantNoFile(r, oci)
	} else {
		c.checkOCI(oci)
	}
	docker := filepath.Join(c.dir, "out.docker.tar")
	cacheDir := filepath.Join(c.dir, "cache")
	if r := c.run("build", "--progress", "plain", "-t", "app:1", "-o", "type=docker,dest="+docker, "--cache-to", "type=local,dest="+cacheDir, f.app); r.failed() {
		c.wantNamed(r)
		c.wantNoFile(r, docker)
	} else {
		c.checkDocker(docker)
	}
	c.checkBlobDir(filepath.Join(cacheDir, "blobs", "sha256"))
	ref := newRegistry(t) + "/app:1"
	if r := c.run("push", "app:1", ref); r.failed() {
		c.wantNamed(r)
	} else {
		c.checkRemote(ref)
	}
	c.save("save2")
	c.recover()
}

// wantNamedFsck checks that fsck names the damaged file or digest.
func (c *corruptCell) wantNamedFsck(r result) {
	c.t.Helper()
	out := r.stdout + r.stderr
	for _, s := range c.k.names(c.f) {
		if strings.Contains(out, s) {
			return
		}
	}
	c.t.Errorf("fsck does not name the damaged %s (one of %q):\n%s", c.k.name, c.k.names(c.f), out)
}

func (c *corruptCell) save(name string) {
	c.t.Helper()
	dest := filepath.Join(c.dir, name+".tar")
	if r := c.run("save", "-o", dest, "app:1"); r.failed() {
		c.wantNamed(r)
		c.wantNoFile(r, dest)
	} else {
		c.checkDocker(dest)
	}
}

// recover does what the messages said, then expects a working store.
func (c *corruptCell) recover() {
	t := c.t
	c.run("fsck", "--repair")
	if strings.Contains(c.k.name, "index") {
		if r := c.run("images"); r.failed() || !strings.Contains(r.stdout, "busybox") || !strings.Contains(r.stdout, "app") {
			t.Errorf("fsck --repair did not restore the tags:\n%s%s", r.stdout, r.stderr)
		}
	}
	if strings.Contains(c.stderrs.String(), "builder load") {
		c.run("load", "-i", c.f.baseTar)
	}
	docker := filepath.Join(c.dir, "final.docker.tar")
	if r := c.run("build", "--progress", "plain", "-t", "app:1", "-o", "type=docker,dest="+docker, c.f.app); r.failed() {
		t.Errorf("build after recovery failed:\n%s", r.stderr)
	} else {
		c.checkDocker(docker)
	}
	dest := filepath.Join(c.dir, "final.save.tar")
	if r := c.run("save", "-o", dest, "app:1", "busybox:fixture"); r.failed() {
		t.Errorf("save after recovery failed:\n%s", r.stderr)
	} else {
		c.checkDocker(dest)
	}
	if r := c.run("fsck"); r.failed() {
		t.Errorf("fsck after recovery still finds problems:\n%s%s", r.stdout, r.stderr)
	}
}

func (c *corruptCell) checkDocker(path string) {
	c.t.Helper()
	tag, err := name.NewTag("app:1")
	if err != nil {
		c.t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(path, &tag)
	if err != nil {
		c.t.Errorf("read %s: %v", path, err)
		return
	}
	c.checkImage(path, img)
}

func (c *corruptCell) checkOCI(path string) {
	c.t.Helper()
	dir := filepath.Join(c.dir, strings.TrimSuffix(filepath.Base(path), ".tar")+".d")
	if out, err := exec.Command("tar", "-xf", path, "-C", mkdir(c.t, dir)).CombinedOutput(); err != nil {
		c.t.Errorf("extract %s: %v\n%s", path, err, out)
		return
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		c.t.Errorf("read %s: %v", path, err)
		return
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) == 0 {
		c.t.Errorf("%s: index: %v (%d manifests)", path, err, len(im.Manifests))
		return
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		c.t.Errorf("%s: image: %v", path, err)
		return
	}
	c.checkImage(path, img)
}

func (c *corruptCell) checkRemote(ref string) {
	c.t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		c.t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		c.t.Errorf("pull back %s: %v", ref, err)
		return
	}
	c.checkImage(ref, img)
}

// checkImage validates img (digests, diffIDs, sizes of every layer) and
// its files: the base image's busybox and the RUN step's output.
func (c *corruptCell) checkImage(what string, img v1.Image) {
	c.t.Helper()
	if err := validate.Image(img); err != nil {
		c.t.Errorf("%s: invalid image: %v", what, err)
		return
	}
	files := map[string][]byte{"bin/busybox": nil, "b.txt": nil, "a.txt": nil}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			c.t.Errorf("%s: read files: %v", what, err)
			return
		}
		n := strings.TrimPrefix(h.Name, "./")
		if _, ok := files[n]; ok {
			if files[n], err = io.ReadAll(tr); err != nil {
				c.t.Errorf("%s: read %s: %v", what, n, err)
			}
		}
	}
	if !bytes.Equal(files["bin/busybox"], c.f.busybox) {
		c.t.Errorf("%s: /bin/busybox differs from the base image's (%d bytes)", what, len(files["bin/busybox"]))
	}
	for _, n := range []string{"a.txt", "b.txt"} {
		if string(files[n]) != "a\n" {
			c.t.Errorf("%s: /%s = %q, want %q", what, n, files[n], "a\n")
		}
	}
}

// checkBlobDir checks that every blob of an OCI layout has its digest.
func (c *corruptCell) checkBlobDir(dir string) {
	c.t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		sum := sha256.Sum256(data)
		if err != nil || hex.EncodeToString(sum[:]) != e.Name() {
			c.t.Errorf("cache export %s: blob %s has digest %x (%v)", dir, e.Name(), sum, err)
		}
	}
}

func mkdir(t *testing.T, dir string) string {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// treeDigest hashes the names, sizes and contents of the store's lasting
// files (not its scratch areas or locks).
func treeDigest(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	for _, d := range []string{"blobs", "keys", "images", "builds", "hashes", "snapshots", "compressed"} {
		filepath.Walk(filepath.Join(root, d), func(p string, fi os.FileInfo, err error) error {
			if err != nil || strings.HasSuffix(p, ".lock") {
				return nil
			}
			fmt.Fprintf(h, "%s %v %d\n", strings.TrimPrefix(p, root), fi.Mode(), fi.Size())
			if fi.Mode().IsRegular() {
				data, _ := os.ReadFile(p)
				h.Write(data)
			}
			return nil
		})
	}
	return hex.EncodeToString(h.Sum(nil))
}
