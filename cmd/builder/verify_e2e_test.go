package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const epochEnv = "SOURCE_DATE_EPOCH=1700000000"

// runEnv is run with extra environment variables; it returns the exit
// status too.
func (e *e2eEnv) runEnv(env []string, args ...string) (string, string, int) {
	e.t.Helper()
	cmd := exec.CommandContext(e.t.Context(), builderBin, append([]string{"--root", e.root}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	case err != nil:
		e.t.Fatal(err)
	}
	return stdout.String(), stderr.String(), 0
}

func TestE2EVerifyReproducible(t *testing.T) {
	e := newEnv(t)
	good := e.context("FROM busybox:fixture\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt && mkdir -p /out && echo ok > /out/x\nENV X=1\n",
		map[string]string{"a.txt": "same\n"})
	_, errOut, code := e.runEnv([]string{epochEnv}, "build", "--progress", "plain", "--verify-reproducible", "-t", "good:1", good)
	if code != 0 || !strings.Contains(errOut, "=> SOURCE_DATE_EPOCH=1700000000 (from the environment)") ||
		!strings.Contains(errOut, "=> reproducible: the rebuild from nothing gave the same image sha256:") {
		t.Errorf("reproducible fixture: exit %d\n%s", code, errOut)
	}

	// date has a one-second resolution: the sleep makes the rebuild's
	// RUN see another second than the build's.
	bad := e.context("FROM busybox:fixture\nCOPY a.txt /a.txt\nRUN sleep 1 && date > /built-at\n", map[string]string{"a.txt": "same\n"})
	_, errOut, code = e.runEnv([]string{epochEnv}, "build", "--progress", "plain", "--verify-reproducible", "-t", "bad:1", bad)
	if code == 0 {
		t.Errorf("a build that writes the date passed verification:\n%s", errOut)
	}
	for _, want := range []string{
		"layer 3 changed: RUN /bin/sh -c sleep 1 && date > /built-at",
		"changed  /built-at: digest sha256:",
		"ERROR: not reproducible: the build gave sha256:",
		"(1 file, 0 config fields differ: /built-at)",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("failed verification lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "changed  /a.txt") {
		t.Errorf("verification names a file that is the same:\n%s", errOut)
	}
	// The image was built and stored all the same; its record says why
	// the build failed.
	if out, _ := e.mustRun("builds", "inspect", "latest"); !strings.Contains(out, "not reproducible") {
		t.Errorf("record of the failed verification:\n%s", out)
	}
}

func TestE2EVerifyEpochSources(t *testing.T) {
	e := newEnv(t)
	// The Dockerfile's ARG default.
	ctx := e.context("ARG SOURCE_DATE_EPOCH=1600000000\nFROM busybox:fixture\nRUN echo x > /x\n", nil)
	_, errOut := e.mustRun("build", "--progress", "plain", "--verify-reproducible", "-t", "argepoch:1", ctx)
	if !strings.Contains(errOut, "SOURCE_DATE_EPOCH=1600000000 (from the Dockerfile's ARG SOURCE_DATE_EPOCH)") || !strings.Contains(errOut, "=> reproducible") {
		t.Errorf("epoch from the Dockerfile:\n%s", errOut)
	}
	if out, _ := e.mustRun("inspect", "argepoch:1"); !strings.Contains(out, "2020-09-13T12:26:40Z") {
		t.Errorf("the image's times are not the Dockerfile's epoch:\n%s", out)
	}

	// The context's git commit time.
	ctx = e.context("FROM busybox:fixture\nCOPY a.txt /a.txt\n", map[string]string{"a.txt": "a\n"})
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c"}} {
		cmd := exec.Command("git", append([]string{"-C", ctx}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_COMMITTER_DATE=1500000000 +0000", "GIT_AUTHOR_DATE=1500000000 +0000")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	_, errOut = e.mustRun("build", "--progress", "plain", "--verify-reproducible", ctx)
	if !strings.Contains(errOut, "SOURCE_DATE_EPOCH=1500000000 (from the commit time of the context's git checkout)") || !strings.Contains(errOut, "=> reproducible") {
		t.Errorf("epoch from git:\n%s", errOut)
	}
	if out, _ := e.mustRun("builds", "inspect", "latest"); !strings.Contains(out, "(git ") {
		t.Errorf("the record lacks the context's git commit:\n%s", out)
	}

	// None of them: an error saying where to put one.
	ctx = e.context("FROM busybox:fixture\nRUN true\n", nil)
	if _, errOut, code := e.runEnv(nil, "build", "--verify-reproducible", ctx); code == 0 || !strings.Contains(errOut, "--verify-reproducible needs SOURCE_DATE_EPOCH") {
		t.Errorf("no epoch: exit %d\n%s", code, errOut)
	}
}

func TestE2EVerifyImage(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nARG V=1\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt && echo $V >> /b.txt\n", map[string]string{"a.txt": "one\n"})
	e.mustRunEnv([]string{epochEnv}, "build", "--progress", "quiet", "--build-arg", "V=2", "-t", "v:1", ctx)
	out, errOut, code := e.runEnv(nil, "verify", "--progress", "plain", "v:1")
	if code != 0 || !strings.Contains(errOut, "=> reproducible") {
		t.Errorf("verify of an unchanged build: exit %d\n%s\n%s", code, out, errOut)
	}
	// The rebuild used the recorded build arg: V=2 is in the key, so a
	// rebuild with the default would differ.

	// The context changed since: verify fails naming the file and step.
	e.write(ctx, "a.txt", "two\n")
	out, errOut, code = e.runEnv(nil, "verify", "--progress", "quiet", "v:1")
	if code == 0 {
		t.Fatalf("verify passed after the context changed:\n%s", out)
	}
	for _, want := range []string{
		"line 3   [2/3] COPY a.txt /a.txt\n           changed: a.txt content changed",
		"changed  /a.txt: digest sha256:",
		"changed  /b.txt: digest sha256:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify's report lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "ERROR: not reproducible") {
		t.Errorf("verify's error:\n%s", errOut)
	}

	// An image without a build record here cannot be verified.
	tar := e.saveBase()
	other := e.fresh("root-other")
	other.mustRun("load", "-i", tar)
	if _, errOut, code := other.runEnv(nil, "verify", "busybox:fixture"); code == 0 || !strings.Contains(errOut, "no build record") {
		t.Errorf("verify without a record: exit %d\n%s", code, errOut)
	}
}
