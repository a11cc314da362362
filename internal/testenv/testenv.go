// Package testenv holds the one set of test requirements: what a test
// needs of the machine (root, a Docker daemon, a registry binary) and what
// happens without it. On a developer's machine a missing requirement skips
// the test; with CI=true it fails, so CI can never pass by skipping. With
// -short (make test-short) every test that needs one of them skips: the
// short loop is fast and runs without root.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// DockerBin is the Docker client the tests use (Debian's docker.io).
const DockerBin = "/usr/bin/docker"

// RegistryBin is Debian's docker-registry, run on 127.0.0.1 by the tests.
const RegistryBin = "/usr/bin/docker-registry"

// CI reports whether the tests run in CI (CI=true), where nothing may skip.
func CI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips the test, or fails it when CI=true.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("CI=true but %s", msg)
	}
	t.Skip(msg)
}

// SkipShort skips a slow test (a build, a daemon, a registry) under -short.
func SkipShort(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: %s", what)
	}
}

// RequireRoot needs root (mounts, namespaces, mknod, chown). Such tests
// are slow: -short skips them.
func RequireRoot(t testing.TB) {
	t.Helper()
	SkipShort(t, "the test needs root")
	if uid := os.Geteuid(); uid != 0 {
		SkipOrFail(t, "the test needs root (uid %d)", uid)
	}
}

// RequireDocker needs a Docker daemon that DockerBin reaches.
func RequireDocker(t testing.TB) {
	t.Helper()
	SkipShort(t, "the test needs a Docker daemon")
	if _, err := os.Stat(DockerBin); err != nil {
		SkipOrFail(t, "the test needs the docker client %s (apt-get install docker.io)", DockerBin)
	}
	if out, err := exec.CommandContext(t.Context(), DockerBin, "info").CombinedOutput(); err != nil {
		SkipOrFail(t, "the test needs a Docker daemon (%s info: %v): %s", DockerBin, err, lastLines(string(out), 5))
	}
}

// RequireRegistry needs RegistryBin.
func RequireRegistry(t testing.TB) {
	t.Helper()
	SkipShort(t, "the test needs a registry")
	if _, err := os.Stat(RegistryBin); err != nil {
		SkipOrFail(t, "the test needs %s (apt-get install docker-registry): %v", RegistryBin, err)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
