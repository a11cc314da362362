package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const crashDockerfile = `FROM busybox:fixture
COPY a.txt /a.txt
RUN sleep 0.2 && cat /a.txt > /b.txt
COPY c/ /c/
RUN sleep 0.2 && ls /c > /list.txt
RUN sleep 0.2 && echo done > /done.txt
`

// TestE2ECrash kills the builder with SIGKILL at random moments of 30
// builds, cold and cached, and checks after each kill that the store is
// consistent, then that a last build succeeds with the right output.
func TestE2ECrash(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := e.context(crashDockerfile, map[string]string{"a.txt": "a0\n", "c/one": "1", "c/two": "2"})
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	killed := 0
	for i := range 30 {
		args := []string{"build", "--progress", "plain", "-t", "crash:1"}
		switch {
		case i%3 == 0:
			e.write(dir, "a.txt", fmt.Sprintf("a%d\n", i)) // cold from the first COPY
		case i%5 == 1:
			args = append(args, "--no-cache")
		}
		delay := time.Duration(rng.Int64N(int64(700 * time.Millisecond)))
		if e.killBuildAfter(append(args, dir), delay) {
			killed++
		}
		checkStore(t, e.root)
		if t.Failed() {
			t.Fatalf("store inconsistent after build %d (killed after %v)", i, delay)
		}
	}
	t.Logf("%d of 30 builds killed", killed)
	if killed < 10 {
		t.Errorf("only %d builds were killed; the test did not exercise crashes", killed)
	}
	e.write(dir, "a.txt", "final\n")
	out := filepath.Join(e.dir, "out")
	m := e.build(dir, "-t", "crash:1", "-o", "type=local,dest="+out, "-o", "type=docker,dest="+filepath.Join(e.dir, "crash.tar"))
	wantFileContent(t, filepath.Join(out, "b.txt"), "final\n")
	wantFileContent(t, filepath.Join(out, "list.txt"), "one\ntwo\n")
	wantFileContent(t, filepath.Join(out, "done.txt"), "done\n")
	e.build(dir, "-t", "crash:1").wantAllHits(t)
	checkStore(t, e.root)
	for _, pat := range []string{"tmp/*", "active/*", "snapshots/.*"} {
		left, _ := filepath.Glob(filepath.Join(e.root, pat))
		t.Logf("left in %s after the crashes: %d entries %v", pat, len(left), left)
	}
	if m.ImageDigest == "" {
		t.Errorf("final build has no image digest")
	}
}

// killBuildAfter starts builder with args, sends SIGKILL after delay and
// waits until no process of the build is left. It reports whether the
// build was killed (rather than finishing first).
func (e *e2eEnv) killBuildAfter(args []string, delay time.Duration) bool {
	e.t.Helper()
	cmd := exec.Command(builderBin, append([]string{"--root", e.root}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	killed := false
	select {
	case err := <-done:
		if err != nil {
			e.t.Fatalf("build failed without being killed: %v\n%s", err, out.String())
		}
	case <-time.After(delay):
		killed = cmd.Process.Signal(syscall.SIGKILL) == nil
		<-done
	}
	e.waitNoProcesses()
	return killed
}

// waitNoProcesses waits until no process has the store root in its
// command line: the re-executed builder dies with its parent.
func (e *e2eEnv) waitNoProcesses() {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := processesMentioning(e.root)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("builder processes %v still alive 10s after SIGKILL", pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func processesMentioning(s string) []string {
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []string
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(s)) && !strings.HasSuffix(filepath.Dir(p), fmt.Sprintf("/%d", os.Getpid())) {
			pids = append(pids, filepath.Base(filepath.Dir(p)))
		}
	}
	return pids
}

// checkStore checks the invariants a crash must not break: every blob's
// digest is its name, every cache record decodes and points to present
// blobs and layers, every layer directory is whole, the image index decodes
// and nothing is mounted under the root.
func checkStore(t *testing.T, root string) {
	t.Helper()
	checkBlobs(t, root)
	checkKeyRecords(t, root)
	checkLayerDirs(t, root)
	if data, err := os.ReadFile(filepath.Join(root, "images", "index.json")); err == nil && !json.Valid(data) {
		t.Errorf("images/index.json is not valid JSON")
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, root) {
			t.Errorf("mount left under the store: %s", l)
		}
	}
}

func checkBlobs(t *testing.T, root string) {
	t.Helper()
	dir := filepath.Join(root, "blobs", "sha256")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return // killed while its first command made the store: no blob yet
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range entries {
		f, err := os.Open(filepath.Join(dir, d.Name()))
		if err != nil {
			t.Errorf("blob %s: %v", d.Name(), err)
			continue
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if got := hex.EncodeToString(h.Sum(nil)); err != nil || got != d.Name() {
			t.Errorf("blob %s has digest %s (read error %v)", d.Name(), got, err)
		}
	}
}

func checkKeyRecords(t *testing.T, root string) {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(root, "keys", "*.json"))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("key record %s: %v", p, err)
			continue
		}
		var rec struct {
			Key        string   `json:"key"`
			DiffID     string   `json:"diffID"`
			EmptyLayer bool     `json:"emptyLayer"`
			Blobs      []string `json:"blobs"`
		}
		if err := json.Unmarshal(data, &rec); err != nil {
			t.Errorf("key record %s does not decode: %v", p, err)
			continue
		}
		if strings.TrimPrefix(rec.Key, "sha256:")+".json" != filepath.Base(p) {
			t.Errorf("key record %s holds key %s", p, rec.Key)
		}
		if !rec.EmptyLayer && !layerWhole(root, rec.DiffID) {
			t.Errorf("key record %s points to missing layer %q", p, rec.DiffID)
		}
		for _, b := range rec.Blobs {
			if _, err := os.Stat(filepath.Join(root, "blobs", "sha256", strings.TrimPrefix(b, "sha256:"))); err != nil {
				t.Errorf("key record %s points to missing blob %s", p, b)
			}
		}
	}
}

func layerWhole(root, diffID string) bool {
	d := filepath.Join(root, "snapshots", strings.TrimPrefix(diffID, "sha256:"))
	if _, err := os.Stat(filepath.Join(d, "layer.json")); err != nil {
		return false
	}
	fi, err := os.Stat(filepath.Join(d, "fs"))
	return err == nil && fi.IsDir()
}

// checkLayerDirs checks that every named layer directory is whole; the
// dot-named ones are temporaries a later build or prune may remove.
func checkLayerDirs(t *testing.T, root string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "snapshots"))
	if errors.Is(err, os.ErrNotExist) {
		return // killed before the store had a layer store
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range entries {
		if strings.HasPrefix(d.Name(), ".") {
			continue
		}
		if !layerWhole(root, "sha256:"+d.Name()) {
			t.Errorf("layer directory %s is not whole", d.Name())
		}
	}
}
