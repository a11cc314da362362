package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/testenv"
)

// --load (and -o type=docker without dest) streams the image into the
// Docker engine, and --iidfile/-q give the ID that engine shows; a FROM
// naming an image that only the engine has copies it from there.
func TestE2ELoadIntoDockerEngine(t *testing.T) {
	e := newEnv(t)
	testenv.RequireDocker(t)
	id := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	tag, tag2, engineOnly := "builder-load:"+id, "builder-load2:"+id, "builder-engine-only:"+id
	t.Cleanup(func() { _ = exec.Command(testenv.DockerBin, "rmi", "-f", tag, tag2, engineOnly).Run() })

	dir := e.context("FROM busybox:fixture\nRUN echo loaded > /hello\nCMD [\"cat\", \"/hello\"]\n", nil)
	iid := filepath.Join(e.dir, "iid")
	_, errOut := e.mustRun("build", "--progress", "plain", "--load", "--iidfile", iid, "-t", tag, dir)
	if !strings.Contains(errOut, "loading into the docker engine") || !strings.Contains(errOut, "Loaded image") {
		t.Errorf("--load progress does not say it loaded:\n%s", errOut)
	}
	engineID := strings.TrimSpace(docker(t, "image", "inspect", "--format", "{{.Id}}", tag))
	if got := readFileString(t, iid); got != engineID {
		t.Errorf("--iidfile %q; the engine shows %q", got, engineID)
	}
	if out := docker(t, "run", "--rm", "--network", "none", tag); out != "loaded\n" {
		t.Errorf("docker run of the loaded image: %q", out)
	}
	// -o type=docker without dest means the same; -q prints the ID.
	out, _ := e.mustRun("build", "-q", "-o", "type=docker", "-t", tag2, dir)
	if got := strings.TrimSpace(out); got != strings.TrimSpace(docker(t, "image", "inspect", "--format", "{{.Id}}", tag2)) {
		t.Errorf("-q printed %q, not the engine's ID of %s", got, tag2)
	}

	// An image only the engine has: a fresh store finds it there.
	docker(t, "tag", tag, engineOnly)
	other := e.fresh("engine-root")
	dir2 := other.context(fmt.Sprintf("FROM %s\nRUN cat /hello > /again\n", engineOnly), nil)
	local := filepath.Join(other.dir, "out")
	_, errOut = other.mustRun("build", "--progress", "plain", "-o", "type=local,dest="+local, dir2)
	if !strings.Contains(errOut, "copying "+engineOnly+" from the docker engine") {
		t.Errorf("the build did not say where the base came from:\n%s", errOut)
	}
	wantFileContent(t, filepath.Join(local, "again"), "loaded\n")
}

// Other engines load builder's docker-save tarball too: Podman (podman
// load) and containerd (ctr images import), and run it.
func TestE2ETarballInPodmanAndContainerd(t *testing.T) {
	e := newEnv(t)
	testenv.RequireDocker(t) // its containerd serves ctr
	podman := requireTool(t, "podman")
	ctr := requireTool(t, "ctr")
	dir := e.context("FROM busybox:fixture\nRUN echo other engines > /hello\n", nil)
	tar := filepath.Join(e.dir, "img.tar")
	name := fmt.Sprintf("localhost/builder-engines:%d", time.Now().UnixNano())
	e.mustRun("build", "-t", name, "-o", "type=docker,dest="+tar, dir)

	t.Run("podman", func(t *testing.T) {
		t.Cleanup(func() { _ = exec.Command(podman, "rmi", "-f", name).Run() })
		mustExec(t, podman, "load", "-i", tar)
		// Limits below podman's defaults, which a CI container without
		// CAP_SYS_RESOURCE cannot grant.
		if out := mustExec(t, podman, "run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024",
			"--ulimit", "nproc=1024:1024", name, "cat", "/hello"); out != "other engines\n" {
			t.Errorf("podman run: %q", out)
		}
	})
	t.Run("containerd", func(t *testing.T) {
		addr := "/run/docker/containerd/containerd.sock"
		ns := "builder-e2e"
		t.Cleanup(func() { _ = exec.Command(ctr, "--address", addr, "-n", ns, "images", "rm", name).Run() })
		mustExec(t, ctr, "--address", addr, "-n", ns, "images", "import", tar)
		// The sleep: ctr copies the task's output after it exits and can
		// lose what a very short task printed.
		out := mustExec(t, ctr, "--address", addr, "-n", ns, "run", "--rm", name, fmt.Sprintf("builder-e2e-%d", time.Now().UnixNano()), "sh", "-c", "cat /hello; sleep 0.5")
		if out != "other engines\n" {
			t.Errorf("ctr run: %q", out)
		}
	})
}

// requireTool returns the path of a program the test needs; missing, the
// test skips on a developer machine and fails in CI.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	testenv.SkipOrFail(t, "the test needs %s: %v", name, err)
	return ""
}

func mustExec(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
