package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/testenv"
)

// startRegistry runs docker-registry on 127.0.0.1 with a free port and its
// storage in a temporary directory, stops it when the test ends, and
// returns "127.0.0.1:PORT".
func startRegistry(t testing.TB) string {
	t.Helper()
	testenv.RequireRegistry(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.RegistryBin, "serve", cfgPath)
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", testenv.RegistryBin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		logf.Close()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("docker-registry exited:\n%s", log)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("docker-registry on %s not ready in 20s (last error %v):\n%s", addr, err, log)
		}
	}
}

// fresh returns an environment sharing e's scratch space with an empty
// store root, so every base image must come from a registry.
func (e *e2eEnv) fresh(name string) *e2eEnv {
	return &e2eEnv{t: e.t, root: filepath.Join(e.dir, name), dir: e.dir}
}

func TestE2ERegistryPushBuildPull(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	base := reg + "/busybox:fixture"

	out, errOut := e.mustRun("push", "busybox:fixture", base)
	if !strings.Contains(out, "Digest: sha256:") || !strings.Contains(errOut, "compressing layer") {
		t.Errorf("push output:\nstdout:\n%s\nstderr:\n%s", out, errOut)
	}
	// The second push compresses nothing and uploads nothing.
	_, errOut = e.mustRun("push", "busybox:fixture", base)
	if strings.Contains(errOut, "compressing") || strings.Contains(errOut, "uploading") {
		t.Errorf("second push did work again:\n%s", errOut)
	}

	// A fresh store must pull the base image to build FROM it.
	b := e.fresh("root-b")
	app := reg + "/app:v1"
	ctx := e.context("FROM "+base+"\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt && echo built >> /b.txt\n",
		map[string]string{"a.txt": "hello\n"})
	_, errOut = b.mustRun("build", "--progress", "plain", "--push", "-t", app, ctx)
	for _, want := range []string{"pulling " + base, "fetching layer", "pushed " + app + "@sha256:"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("build output lacks %q:\n%s", want, errOut)
		}
	}
	pushed := errOut[strings.Index(errOut, "pushed "+app+"@")+len("pushed "+app+"@"):]
	pushed = strings.Fields(pushed)[0]

	// -o type=registry pushes the same image again: nothing to compress.
	_, errOut = b.mustRun("build", "--progress", "plain", "-o", "type=registry,name="+reg+"/app:v2", ctx)
	if strings.Contains(errOut, "compressing") || strings.Contains(errOut, "uploading") {
		t.Errorf("push of an unchanged build did work again:\n%s", errOut)
	}

	// Pull the result into a third store: same digest, same content. The
	// push is an index (buildx's default provenance): pull stores, and
	// prints, its image for this platform.
	c := e.fresh("root-c")
	out, _ = c.mustRun("pull", app)
	if pushed != remoteDigest(t, app).String() {
		t.Errorf("build reported pushing %s, the registry has %s", pushed, remoteDigest(t, app))
	}
	if img, _ := remoteImage(t, app).Digest(); !strings.Contains(out, "Digest: "+img.String()) {
		t.Errorf("pull printed %q, want digest %s", out, img)
	}
	dir := filepath.Join(e.dir, "out")
	ctx2 := e.context("FROM "+app+"\nRUN cat /b.txt > /c.txt\n", nil)
	c.mustRun("build", "-o", "type=local,dest="+dir, ctx2)
	got, err := os.ReadFile(filepath.Join(dir, "c.txt"))
	if err != nil || string(got) != "hello\nbuilt\n" {
		t.Errorf("c.txt = %q, %v; want the pulled image's /b.txt", got, err)
	}

	// A missing image names the reference and the registry.
	_, errOut, err = c.run("pull", reg+"/nosuch:v1")
	if err == nil || !strings.Contains(errOut, reg+"/nosuch:v1") || !strings.Contains(errOut, "not found") {
		t.Errorf("pull of a missing image: %v\n%s", err, errOut)
	}
}

func TestParseOutputsRegistry(t *testing.T) {
	for _, c := range []struct {
		in      string
		want    output
		wantErr string
	}{
		{in: "type=registry,name=localhost:5000/a:b", want: output{typ: "registry", name: "localhost:5000/a:b", push: true}},
		{in: "type=image,name=a:b", want: output{typ: "image", name: "a:b"}},
		{in: "type=image,name=a:b,push=true", want: output{typ: "image", name: "a:b", push: true}},
		{in: "type=registry", wantErr: "name=REF is required"},
		{in: "type=image,name=a:b,push=maybe", wantErr: "not a boolean"},
		{in: "type=registry,name=UPPER:x", wantErr: "invalid tag"},
	} {
		got, err := parseOutputs([]string{c.in})
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: error %v, want %q", c.in, err, c.wantErr)
			}
			continue
		}
		if err != nil || len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}
