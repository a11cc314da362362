package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/fixtures"
	"github.com/builder-dev/builder/internal/testenv"
)

// imageFixture is built inside the builder image's containers and on the
// host: files of several owners, setuid and setgid bits, a FIFO,
// hardlinks, whiteouts, an opaque directory, a USER switch, a heredoc and
// a COPY.
const imageFixture = `FROM busybox:fixture
RUN mkdir -p /srv/www /opq/old && echo www > /srv/www/index && chown -R 33:33 /srv/www && \
    cp /bin/busybox /srv/suid && chmod 4755 /srv/suid && chown 0:50 /srv/suid && chmod 2755 /srv/suid && \
    echo o > /opq/old/f && echo h > /srv/h1 && ln /srv/h1 /srv/h2 && mkfifo /srv/fifo && \
    echo n > /srv/nobody && chown 65534:65534 /srv/nobody
RUN rm -rf /opq && mkdir /opq && echo new > /opq/new && rm /srv/h2 /bin/true && chmod 600 /srv/www/index
RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && mkdir -p /home/app && chown 1000:1000 /home/app
USER app
RUN id > /home/app/id && echo by-app > /home/app/f
USER root
RUN <<EOF
echo heredoc > /heredoc
EOF
COPY a.txt /srv/a.txt
`

// TestE2EBuilderImageInDocker builds the builder image (image/Dockerfile,
// with builder), then builds a fixture with RUN steps inside `docker run`
// of it (Docker's default seccomp profile, no --privileged, no network) as
// root and as an ordinary user, and compares both results with the same
// build on the host: the same image digest (SOURCE_DATE_EPOCH), and the
// output names the isolation in effect (chroot: the container allows no
// new namespace).
func TestE2EBuilderImageInDocker(t *testing.T) {
	e := newEnvAs(t, nil)
	testenv.RequireDocker(t)
	img := buildBuilderImage(t, e)
	work := filepath.Join(e.dir, "work")
	ctx := filepath.Join(work, "ctx")
	e.write(ctx, "Dockerfile", imageFixture)
	e.write(ctx, "a.txt", "a\n")
	e.mustRun("save", "-o", filepath.Join(work, "base.tar"), "busybox:fixture")
	if err := filepath.Walk(work, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chmod(p, 0o777) // the container's user 1000 writes its store and output here
	}); err != nil {
		t.Fatal(err)
	}
	hostIID, hostTar := filepath.Join(e.dir, "host.iid"), filepath.Join(e.dir, "host.tar")
	e.mustRun("build", "--network", "none", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", "--iidfile", hostIID, "-o", "type=docker,dest="+hostTar, ctx)
	want, err := os.ReadFile(hostIID)
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"0", "1000"} {
		t.Run("user-"+user, func(t *testing.T) {
			out := "out-" + user + ".tar"
			script := "builder load -i /work/base.tar >/dev/null && builder build --progress plain " +
				"--build-arg SOURCE_DATE_EPOCH=1700000000 --iidfile /work/iid-" + user + " -o type=docker,dest=/work/" + out + " /work/ctx"
			cmd := exec.CommandContext(t.Context(), testenv.DockerBin, "run", "--rm", "--network", "none", "--user", user,
				"-v", work+":/work", img, "sh", "-c", script)
			b, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("docker run --user %s: %v\n%s", user, err, b)
			}
			if !strings.Contains(string(b), "isolation: chroot") {
				t.Errorf("the build in the container does not name its isolation:\n%s", b)
			}
			got, err := os.ReadFile(filepath.Join(work, "iid-"+user))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("in a container as user %s: %s, on the host: %s\n%s", user, got, want, b)
				for _, d := range fixtures.CompareTrees(readImage(t, filepath.Join(work, out)).tree, readImage(t, hostTar).tree) {
					t.Errorf("container vs host: %s", d)
				}
			}
		})
	}
}

// Without the capabilities (no-new-privileges ignores file capabilities)
// an ordinary user can neither store an image's files of other owners nor
// chroot: both fail, saying why.
func TestE2EBuilderImageNoCapabilities(t *testing.T) {
	e := newEnvAs(t, nil)
	testenv.RequireDocker(t)
	img := buildBuilderImage(t, e)
	work := filepath.Join(e.dir, "work")
	e.write(work, "ctx/Dockerfile", "FROM scratch\nRUN [\"/x\"]\n")
	e.mustRun("save", "-o", filepath.Join(work, "base.tar"), "busybox:fixture")
	if err := os.Chmod(filepath.Join(work, "base.tar"), 0o644); err != nil {
		t.Fatal(err)
	}
	nocaps := func(script string) string {
		t.Helper()
		b, err := exec.CommandContext(t.Context(), testenv.DockerBin, "run", "--rm", "--network", "none", "--user", "1000",
			"--security-opt", "no-new-privileges", "-v", work+":/work", img, "sh", "-c", script).CombinedOutput()
		if err == nil {
			t.Errorf("%s succeeded without capabilities:\n%s", script, b)
		}
		return string(b)
	}
	if out := nocaps("builder load -i /work/base.tar"); !strings.Contains(out, "files of other owners need root, a user namespace or the builder image's capabilities") {
		t.Errorf("load without capabilities:\n%s", out)
	}
	if out := nocaps("builder build /work/ctx"); !strings.Contains(out, "RUN needs new namespaces or chroot(2)") {
		t.Errorf("build without capabilities:\n%s", out)
	}
}

// buildBuilderImage builds the builder image from image/Dockerfile with a
// static builder on the fixtures' busybox and loads it into Docker,
// returning its tag (removed at cleanup).
func buildBuilderImage(t *testing.T, e *e2eEnv) string {
	t.Helper()
	ctx := filepath.Join(e.dir, "image")
	if err := os.MkdirAll(ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "builder")
	gobuild := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".")
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	if out, err := exec.CommandContext(t.Context(), "go", "run", "../../image/mkcontext", bin, ctx).CombinedOutput(); err != nil {
		t.Fatalf("image context: %v\n%s", err, out)
	}
	df, err := os.ReadFile("../../image/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	e.write(ctx, "Dockerfile", string(df))
	tag := fmt.Sprintf("builder-image-e2e:%d-%d", os.Getpid(), time.Now().UnixNano())
	dest := filepath.Join(e.dir, "image.tar")
	e.mustRun("build", "--network", "none", "--build-arg", "BASE=busybox:fixture", "-t", tag, "-o", "type=docker,dest="+dest, ctx)
	docker(t, "load", "-i", dest)
	t.Cleanup(func() { _ = exec.Command(testenv.DockerBin, "rmi", "-f", tag).Run() })
	return tag
}
