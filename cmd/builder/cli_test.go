package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// runBin runs the builder binary with args and returns its exit code,
// stdout and stderr.
func runBin(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(builderBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("run builder %q: %v", args, err)
	return 0, "", ""
}

// A command line builder cannot parse says what is wrong and how to use
// it, on stderr, with exit status 2.
func TestCLIUsageErrors(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	for _, tc := range []struct {
		args        []string
		error, uses string
	}{
		{[]string{"--bogus"}, "ERROR: unknown flag: --bogus", "Usage: builder [--root DIR] COMMAND"},
		{[]string{"bogus"}, `ERROR: unknown command "bogus"`, "Usage: builder [--root DIR] COMMAND"},
		{[]string{"--root", root, "build", "--bogus", "."}, "ERROR: unknown flag: --bogus", "Usage: builder build [OPTIONS] CONTEXT"},
		{[]string{"--root", root, "images", "--nope"}, "ERROR: unknown flag: --nope", "Usage: builder images"},
		{[]string{"--root", root, "prune", "--keep-storage"}, "ERROR: flag needs an argument", "Usage: builder prune"},
	} {
		code, stdout, stderr := runBin(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.error) || !strings.Contains(stderr, tc.uses) || stdout != "" {
			t.Errorf("builder %q: exit %d, stdout %q, stderr:\n%s\nwant exit 2, nothing on stdout, %q and %q on stderr", tc.args, code, stdout, stderr, tc.error, tc.uses)
		}
	}
}

func TestCLIVersion(t *testing.T) {
	t.Parallel()
	want := regexp.MustCompile(`^builder \S+( \([0-9a-f]+(-dirty)?\))? go\S+ [a-z0-9]+/[a-z0-9]+\n$`)
	for _, args := range [][]string{{"--version"}, {"-v"}, {"version"}} {
		code, stdout, stderr := runBin(t, args...)
		if code != 0 || !want.MatchString(stdout) || stderr != "" {
			t.Errorf("builder %q: exit %d, stdout %q, stderr %q; want exit 0 and a line matching %s", args, code, stdout, stderr, want)
		}
	}
}

// docker build's flags that have no effect in a BuildKit build are
// accepted (and ignored); --isolation default is auto, an unknown
// isolation is refused.
func TestCLILegacyBuildFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY a /a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	code, stdout, stderr := runBin(t, "--root", root, "build", "--check", "--rm", "--force-rm", "--compress",
		"--disable-content-trust=false", "--isolation", "default", dir)
	if code != 0 || !strings.Contains(stdout, "no warnings found") {
		t.Errorf("legacy flags: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = runBin(t, "--root", root, "build", "--check", "--isolation", "hyperv", dir)
	if code != 1 || !strings.Contains(stderr, `--isolation "hyperv"`) {
		t.Errorf("--isolation hyperv: exit %d, stderr %q; want exit 1 naming the value", code, stderr)
	}
}
