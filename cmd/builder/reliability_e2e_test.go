package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/builder-dev/builder/fixtures"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/builder-dev/builder/internal/testenv"
)

// The reliability tests (store, signals, permissions) that need the real
// binary: a full disk (CACHE-05), SIGINT during a pull (SIG-01) and during
// a tar export over a symlink (SIG-03), directory modes and a lock held by
// a killed process (CACHE-08), and a layer directory changed after commit.

// newEnvOnTmpfs is newEnv with the store root on a tmpfs of size bytes,
// unmounted when the test ends. It returns the env and a function that
// resizes the tmpfs.
func newEnvOnTmpfs(t *testing.T, size string) (*e2eEnv, func(size string)) {
	t.Helper()
	testenv.RequireRoot(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "small")
	e := &e2eEnv{t: t, root: filepath.Join(mnt, "root"), dir: dir}
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	resize := func(size string) {
		t.Helper()
		if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_REMOUNT, "size="+size); err != nil {
			t.Fatalf("remount tmpfs %s with size %s: %v", mnt, size, err)
		}
	}
	base := filepath.Join(dir, "base")
	if err := fixtures.BusyboxRootfs(context.Background(), filepath.Join(base, "rootfs")); err != nil {
		t.Fatalf("busybox rootfs: %v", err)
	}
	e.write(base, "Dockerfile", "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n")
	e.mustRun("build", "-t", "busybox:fixture", base)
	return e, resize
}

// checkNoTemporaries wants nothing in tmp/ and active/ and no dot-named
// directory in snapshots/.
func checkNoTemporaries(t *testing.T, root string) {
	t.Helper()
	checkEmptyDir(t, filepath.Join(root, "tmp"))
	if _, err := os.Stat(filepath.Join(root, "active")); err == nil {
		checkEmptyDir(t, filepath.Join(root, "active"))
	}
	checkNoTempSnapshots(t, filepath.Join(root, "snapshots"))
}

// TestE2EDiskFull (CACHE-05): a store on an 8 MiB tmpfs fills up in the
// middle of a COPY of a big file and of a RUN writing one. The build fails
// with "no space left on device" naming the path, leaves no partial entry,
// and after the file system grows the next build succeeds and still hits
// the steps cached before.
func TestE2EDiskFull(t *testing.T) {
	e, resize := newEnvOnTmpfs(t, "8m")
	big := strings.Repeat("0123456789abcdef", 12<<20/16) // 12 MiB
	dir := e.context("FROM busybox:fixture\nCOPY small.txt /small.txt\nCOPY big.bin /big.bin\n",
		map[string]string{"small.txt": "small\n", "big.bin": big})

	_, errOut, err := e.run("build", "--progress", "plain", dir)
	if err == nil {
		t.Fatalf("COPY of 12 MiB into an 8 MiB store succeeded:\n%s", errOut)
	}
	if !strings.Contains(errOut, "no space left on device") || !strings.Contains(errOut, e.root) {
		t.Errorf("COPY error does not say \"no space left on device\" with a path under %s:\n%s", e.root, errOut)
	}
	t.Logf("COPY into a full store:\n%s", errOut)
	checkStore(t, e.root)
	checkNoTemporaries(t, e.root)

	run := e.context("FROM busybox:fixture\nCOPY small.txt /small.txt\nRUN dd if=/dev/zero of=/big bs=1M count=12\n",
		map[string]string{"small.txt": "small\n"})
	_, errOut, err = e.run("build", "--progress", "plain", run)
	if err == nil {
		t.Fatalf("RUN writing 12 MiB into an 8 MiB store succeeded:\n%s", errOut)
	}
	if !strings.Contains(strings.ToLower(errOut), "no space left on device") {
		t.Errorf("RUN error does not say \"no space left on device\":\n%s", errOut)
	}
	checkStore(t, e.root)
	checkNoTemporaries(t, e.root)

	resize("64m")
	m := e.build(dir)
	m.wantCache(t, "", "COPY small.txt", "hit", "")
	m.wantCache(t, "", "COPY big.bin", "miss", "")
	m = e.build(run)
	m.wantCache(t, "", "COPY small.txt", "hit", "")
	checkStore(t, e.root)
	checkNoTemporaries(t, e.root)
}

// slowRegistry serves an in-process registry; once slow is set, blob
// downloads trickle out in small chunks and started is closed when one
// has sent more than 64 KiB.
type slowRegistry struct {
	h       http.Handler
	slow    atomic.Bool
	once    sync.Once
	started chan struct{}
}

func (s *slowRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.slow.Load() || r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
		s.h.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	s.h.ServeHTTP(rec, r)
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	body, sent := rec.Body.Bytes(), 0
	for len(body) > 0 {
		n := min(len(body), 8<<10)
		if _, err := w.Write(body[:n]); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		body, sent = body[n:], sent+n
		if sent > 64<<10 {
			s.once.Do(func() { close(s.started) })
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// interruptAfter starts cmd, sends SIGINT once ready is closed, and
// returns the error of Wait, the time from the signal to the exit and the
// combined output.
func interruptAfter(t *testing.T, cmd *exec.Cmd, ready <-chan struct{}) (error, time.Duration, string) {
	t.Helper()
	return signalAfter(t, cmd, ready, os.Interrupt)
}

// signalAfter is interruptAfter with the signal sig.
func signalAfter(t *testing.T, cmd *exec.Cmd, ready <-chan struct{}, sig os.Signal) (error, time.Duration, string) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("%s exited (%v) before it could be interrupted:\n%s", cmd.Args, err, out.String())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("%s: the interrupt point was not reached in 60s:\n%s", cmd.Args, out.String())
	}
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	select {
	case err := <-exited:
		return err, time.Since(sent), out.String()
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("%s still running 30s after %v:\n%s", cmd.Args, sig, out.String())
	}
	return nil, 0, ""
}

// wantInterrupted wants a non-zero exit within five seconds of SIGINT.
func wantInterrupted(t *testing.T, err error, d time.Duration, out string) {
	t.Helper()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("interrupted command: %v, want a non-zero exit\n%s", err, out)
	}
	if d > 5*time.Second {
		t.Errorf("exit %v after SIGINT, want within 5s\n%s", d, out)
	}
}

// TestE2EInterruptPull (SIG-01): SIGINT while a base image's layer trickles
// in from a slow registry stops the build within seconds and commits no
// partial blob or layer (a build pulls base images lazily: the manifest
// and config may be stored, the layer is fetched when the RUN needs it);
// the next build fetches it and succeeds.
func TestE2EInterruptPull(t *testing.T) {
	e := newEnv(t)
	reg := &slowRegistry{h: registry.New(registry.Logger(discardLogger())), started: make(chan struct{})}
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/busybox:slow"
	e.mustRun("push", "busybox:fixture", ref)
	reg.slow.Store(true)

	b := e.fresh("root-pull")
	dir := e.context("FROM "+ref+"\nRUN echo pulled > /p\n", nil)
	cmd := exec.Command(builderBin, "--root", b.root, "build", "--progress", "plain", dir)
	err, d, out := interruptAfter(t, cmd, reg.started)
	wantInterrupted(t, err, d, out)
	checkStore(t, b.root)
	checkNoTemporaries(t, b.root)
	if dirs := b.layerDirs(); len(dirs) != 0 {
		t.Errorf("interrupted pull left layers %v in the layer store", dirs)
	}

	reg.slow.Store(false)
	b.mustRun("build", "--progress", "plain", dir)
	checkStore(t, b.root)
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// waitForTemp returns a channel closed when a temporary file of dest (the
// exporter writes ".<base>.tmp-*" beside it) holds more than 1 MiB.
func waitForTemp(ctx context.Context, dest string) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		pattern := filepath.Join(filepath.Dir(dest), "."+filepath.Base(dest)+".tmp-*")
		for ctx.Err() == nil {
			ms, _ := filepath.Glob(pattern)
			for _, m := range ms {
				if fi, err := os.Stat(m); err == nil && fi.Size() > 1<<20 {
					close(ch)
					return
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return ch
}

// TestE2EInterruptExportOverSymlink (SIG-03): SIGINT during `save -o` and
// `build -o type=docker,dest=` of a large image, with the destination a
// symlink to another file: the destination keeps its old content and the
// symlink's target is untouched; an uninterrupted export replaces the
// symlink with a complete archive and still leaves the target alone.
func TestE2EInterruptExportOverSymlink(t *testing.T) {
	e := newEnv(t)
	dir := e.context("FROM busybox:fixture\nRUN dd if=/dev/zero of=/big bs=1M count=384 2>/dev/null\n", nil)
	e.mustRun("build", "-t", "big:1", dir)
	for _, c := range []struct {
		name string
		args func(dest string) []string
	}{
		{"save", func(dest string) []string { return []string{"save", "-o", dest, "big:1"} }},
		{"build", func(dest string) []string { return []string{"build", "-o", "type=docker,dest=" + dest, dir} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(e.dir, c.name)
			if err := os.MkdirAll(out, 0o755); err != nil {
				t.Fatal(err)
			}
			victim, dest := filepath.Join(out, "victim.txt"), filepath.Join(out, "out.tar")
			e.write(out, "victim.txt", "victim\n")
			if err := os.Symlink(victim, dest); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			cmd := exec.Command(builderBin, append([]string{"--root", e.root}, c.args(dest)...)...)
			err, d, output := interruptAfter(t, cmd, waitForTemp(ctx, dest))
			wantInterrupted(t, err, d, output)
			if target, err := os.Readlink(dest); err != nil || target != victim {
				t.Errorf("after SIGINT %s is not the symlink to %s: %q, %v", dest, victim, target, err)
			}
			wantFileContent(t, victim, "victim\n")
			checkOnly(t, out, "out.tar", "victim.txt")

			e.mustRun(c.args(dest)...)
			if fi, err := os.Lstat(dest); err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("after the export %s is not a regular file: %v, %v", dest, fi, err)
			}
			img, err := tarball.ImageFromPath(dest, nil)
			if err != nil {
				t.Fatalf("read %s: %v", dest, err)
			}
			if ls, err := img.Layers(); err != nil || len(ls) != 2 {
				t.Errorf("%s: %d layers, %v; want 2", dest, len(ls), err)
			}
			wantFileContent(t, victim, "victim\n")
			checkOnly(t, out, "out.tar", "victim.txt")
		})
	}
}

// checkOnly wants exactly the names in dir.
func checkOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, en := range ents {
		got = append(got, en.Name())
	}
	if strings.Join(got, " ") != strings.Join(names, " ") {
		t.Errorf("%s holds %q, want %q", dir, got, names)
	}
}

// TestE2EStorePermissions (CACHE-08): every directory of the store down to
// the second level is 0700, and the store lock held by a SIGKILLed build is
// released by the kernel so prune can take it.
func TestE2EStorePermissions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := e.context("FROM busybox:fixture\nRUN --mount=type=cache,target=/c echo x > /c/x && echo y > /y\n", nil)
	e.mustRun("build", "-o", "type=docker,dest="+filepath.Join(e.dir, "img.tar"), dir)
	checkPrivateDirs(t, e.root, 2)

	marker := fmt.Sprintf("3%09d", (os.Getpid()*7907+int(time.Now().UnixNano()%1e6))%1e9)
	sleeper := e.context("FROM busybox:fixture\nRUN echo started-"+marker+" && sleep "+marker+"\n", nil)
	cmd := exec.Command(builderBin, "--root", e.root, "build", "--progress", "plain", sleeper)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if started != nil && strings.Contains(sc.Text(), "started-"+marker) && !strings.Contains(sc.Text(), "RUN") {
				close(started)
				started = nil
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("RUN did not start in 60s")
	}
	prune := exec.Command(builderBin, "--root", e.root, "prune")
	var pruneOut bytes.Buffer
	prune.Stdout, prune.Stderr = &pruneOut, &pruneOut
	if err := prune.Start(); err != nil {
		t.Fatal(err)
	}
	pruned := make(chan error, 1)
	go func() { pruned <- prune.Wait() }()
	select {
	case err := <-pruned:
		t.Errorf("prune finished (%v) while a build held the store lock:\n%s", err, pruneOut.String())
	case <-time.After(time.Second):
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	pw.Close()
	select {
	case err := <-pruned:
		if err != nil {
			t.Errorf("prune after the lock holder was killed: %v\n%s", err, pruneOut.String())
		}
	case <-time.After(10 * time.Second):
		prune.Process.Kill()
		<-pruned
		t.Fatalf("prune still waits for the lock 10s after its holder was SIGKILLed:\n%s", pruneOut.String())
	}
	checkStore(t, e.root)
}

// checkPrivateDirs wants root and every directory depth levels below it
// to be mode 0700 and owned by us. What lies inside snapshots/ (layers),
// runcache/ (RUN cache mounts) and active/ (running steps' root file
// systems) has the modes of image content, behind a 0700 parent.
func checkPrivateDirs(t *testing.T, root string, depth int) {
	t.Helper()
	fi, err := os.Lstat(root)
	if err != nil {
		t.Fatal(err)
	}
	uid := fi.Sys().(*syscall.Stat_t).Uid
	if fi.Mode().Perm() != 0o700 || uid != uint32(os.Geteuid()) {
		t.Errorf("store directory %s has mode %v uid %d, want 0700 and uid %d", root, fi.Mode().Perm(), uid, os.Geteuid())
	}
	switch filepath.Base(root) {
	case "snapshots", "runcache", "active":
		return
	}
	if depth == 0 {
		return
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range ents {
		if en.IsDir() {
			checkPrivateDirs(t, filepath.Join(root, en.Name()), depth-1)
		}
	}
}

// TestE2ETamperedLayer: a layer directory changed on disk after commit
// makes the export fail with an error naming the layer and saying it was
// dropped; the next build rebuilds the step and exports a good image.
func TestE2ETamperedLayer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := e.context(storeDockerfile, map[string]string{"a.txt": "a\n"})
	first := e.build(dir)
	layer := first.step(t, "", "RUN").Layer
	e.write(filepath.Join(e.root, "snapshots", strings.TrimPrefix(layer, "sha256:"), "fs"), "b.txt", "tampered\n")
	dest := filepath.Join(e.dir, "image.tar")
	_, errOut, err := e.run("build", "--progress", "plain", "-o", "type=docker,dest="+dest, dir)
	if err == nil {
		t.Fatalf("export of a tampered layer succeeded:\n%s", errOut)
	}
	for _, want := range []string{layer, "modified on disk", "removed it and its cache records", "next build rebuilds"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("error lacks %q:\n%s", want, errOut)
		}
	}
	if first.step(t, "", "RUN").hasLayerDir(e.root) {
		t.Errorf("the tampered layer %s is still in the store", layer)
	}
	checkStore(t, e.root)

	m := e.build(dir, "-o", "type=docker,dest="+dest)
	m.wantCache(t, "", "COPY", "hit", "")
	m.wantCache(t, "", "RUN", "miss", "")
	if !m.step(t, "", "RUN").hasLayerDir(e.root) {
		t.Errorf("the rebuilt RUN step has no layer directory")
	}
	img, err := tarball.ImageFromPath(dest, nil)
	if err != nil {
		t.Fatalf("read %s: %v", dest, err)
	}
	if _, err := img.Manifest(); err != nil {
		t.Errorf("exported image: %v", err)
	}
	checkStore(t, e.root)
}

// TestE2EContextChangedDuringBuild: a context file rewritten while an
// earlier step runs — after the keys pass hashed it for the COPY's key,
// before the COPY reads it — must not be committed under the old key (a
// later build of the old content would get the new one from the cache).
// The COPY fails naming the file, and the build runs again: the RUN comes
// from the cache, the COPY is keyed and copied with the new content. A
// build of the old content then runs the COPY again and gets the old one.
func TestE2EContextChangedDuringBuild(t *testing.T) {
	e := newEnv(t)
	dir := e.context("FROM busybox:fixture\nRUN sleep 3\nCOPY f /f\n", map[string]string{"f": "old content\n"})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dest := filepath.Join(e.dir, "out")
	cmd := e.command(ctx, "--root", e.root, "build", "--progress", "plain", "-o", "type=local,dest="+dest, dir)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(stderr)
	changed := false
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		// The RUN runs: every key is known by now.
		if !changed && strings.Contains(sc.Text(), "RUN sleep 3") {
			e.write(dir, "f", "new content\n")
			changed = true
		}
	}
	if err := cmd.Wait(); err != nil || !changed {
		t.Fatalf("build with f rewritten during its RUN (rewritten: %v): %v\n%s", changed, err, out.String())
	}
	if !strings.Contains(out.String(), filepath.Join(dir, "f")+" changed during the build") || !strings.Contains(out.String(), "building again") {
		t.Errorf("the build did not say that %s changed and that it builds again:\n%s", filepath.Join(dir, "f"), out.String())
	}
	// The step that ran into the change is marked CHANGED: the build did
	// not fail, so nothing in its output says ERROR.
	if !regexp.MustCompile(`(?m)^#\d+ CHANGED: `).MatchString(out.String()) || strings.Contains(out.String(), "ERROR") {
		t.Errorf("the step whose source changed is not marked CHANGED (and nothing ERROR):\n%s", out.String())
	}
	// The RUN ran in the first run: the build's summary counts it run.
	if !strings.Contains(out.String(), "=> cache: 0 of 2 steps reused, 2 run") {
		t.Errorf("the summary does not count the RUN of the first run as run:\n%s", out.String())
	}
	if got, err := os.ReadFile(filepath.Join(dest, "f")); err != nil || string(got) != "new content\n" {
		t.Errorf("/f after the build that ran again: %q, %v", got, err)
	}
	checkStore(t, e.root)
	checkNoTemporaries(t, e.root)

	e.write(dir, "f", "old content\n")
	dest = filepath.Join(e.dir, "out-old")
	m := e.build(dir, "-o", "type=local,dest="+dest)
	m.wantCache(t, "", "RUN sleep 3", "hit", "")
	m.wantCache(t, "", "COPY f /f", "miss", "")
	if got, err := os.ReadFile(filepath.Join(dest, "f")); err != nil || string(got) != "old content\n" {
		t.Errorf("/f after a build of the old content: %q, %v", got, err)
	}
}
