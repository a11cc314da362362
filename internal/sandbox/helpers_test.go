package sandbox_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/internal/testenv"
	"github.com/builder-dev/builder/snapshot"
)

func TestMain(m *testing.M) {
	if sandbox.Init() {
		return // not reached: Init exits
	}
	os.Exit(m.Run())
}

// requireRoot skips without root or busybox, and fails instead when CI=true.
func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	if !fileExists("/bin/busybox") {
		testenv.SkipOrFail(t, "sandbox tests need /bin/busybox (Debian busybox-static)")
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

var applets = []string{
	"sh", "ls", "cat", "id", "echo", "sleep", "ps", "ip", "touch", "mkdir",
	"env", "hostname", "pwd", "grep", "readlink", "test", "true", "kill", "wget",
}

// rootfsOpts says which parts newRootfs adds beyond bin/.
type rootfsOpts struct {
	noEtc     bool // no /etc at all
	systemDir bool // create proc, dev, sys
}

// newRootfs builds a busybox root filesystem in a temp dir.
func newRootfs(t *testing.T, o rootfsOpts) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	mustMkdir(t, filepath.Join(root, "bin"))
	copyFile(t, "/bin/busybox", filepath.Join(root, "bin/busybox"))
	for _, a := range applets {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	if !o.noEtc {
		mustMkdir(t, filepath.Join(root, "etc"))
		writeFile(t, filepath.Join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n")
		writeFile(t, filepath.Join(root, "etc/group"), "root:x:0:\ng:x:1000:\nten:x:10:\ntwenty:x:20:\n")
	}
	if o.systemDir {
		for _, d := range []string{"proc", "dev", "sys"} {
			mustMkdir(t, filepath.Join(root, d))
		}
	}
	return root
}

func mustMkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func bindRoot(dir string) []snapshot.Mount {
	return []snapshot.Mount{{Type: "bind", Source: dir, Options: []string{"rbind", "rw"}}}
}

// shSpec is a Spec running script with /bin/sh -c on root.
func shSpec(root, script string) sandbox.Spec {
	return sandbox.Spec{
		Mounts: bindRoot(root),
		Args:   []string{"/bin/sh", "-c", script},
		Env:    []string{"PATH=/bin"},
	}
}

// run runs spec and returns its stdout and stderr.
func run(ctx context.Context, spec sandbox.Spec) (string, string, error) {
	var stdout, stderr bytes.Buffer
	spec.Stdout, spec.Stderr = &stdout, &stderr
	err := sandbox.Run(ctx, spec)
	return stdout.String(), stderr.String(), err
}

// mustRun runs spec and fails the test on error.
func mustRun(t *testing.T, spec sandbox.Spec) string {
	t.Helper()
	stdout, stderr, err := run(t.Context(), spec)
	if err != nil {
		t.Fatalf("run %q: %v\nstderr: %s", spec.Args, err, stderr)
	}
	return stdout
}

// hostProcesses returns the command lines of host processes containing s.
func hostProcesses(t *testing.T, s string) []string {
	t.Helper()
	found, err := findProcesses(s)
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// childProcesses is hostProcesses limited to children of this process.
func childProcesses(t *testing.T, s string) []string {
	t.Helper()
	found, err := findProcesses(s)
	if err != nil {
		t.Fatal(err)
	}
	var mine []string
	for _, f := range found {
		pid, _, _ := strings.Cut(f, ":")
		stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
		if err != nil {
			continue // gone since
		}
		// The fields after the ")" closing the command name: state, ppid, ...
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		if fields := strings.Fields(rest); len(fields) > 1 && fields[1] == strconv.Itoa(os.Getpid()) {
			mine = append(mine, f)
		}
	}
	return mine
}

// findProcesses returns "pid: cmdline" of host processes containing s.
func findProcesses(s string) ([]string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var found []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmdline, s) {
			found = append(found, e.Name()+": "+cmdline)
		}
	}
	return found, nil
}

// sandboxDirs lists the sandbox scratch directories in the temp dir.
func sandboxDirs(t *testing.T) map[string]bool {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(os.TempDir(), "builder-sandbox-*"))
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, p := range m {
		set[p] = true
	}
	return set
}

func readHostFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
