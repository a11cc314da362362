package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2EIsolationChrootSameDigests builds the rootless fixtures (owners,
// setuid bits, devices, whiteouts, opaque directories, hardlinks, USER)
// with --isolation chroot, as in an unprivileged container, and with the
// default isolation: the image digests must be the same, and the chroot
// build says which isolation it used.
func TestE2EIsolationChrootSameDigests(t *testing.T) {
	e := newEnvAs(t, nil)
	e.mustRun("build", "--network", "none", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", "-t", "devbase", e.context(rootlessBase, nil))
	files := map[string]string{"a.txt": "a\n", "dir/x": "x\n", "dir/sub/y": "y\n"}
	for name, fx := range rootlessFixtures {
		t.Run(name, func(t *testing.T) {
			e.t = t
			ctx := e.context(fx.df, files)
			var ids [2]string
			for i, flags := range [][]string{{"--network", "none"}, {"--isolation", "chroot"}} {
				iid := filepath.Join(e.dir, name+".iid")
				args := append([]string{"build", "--progress", "plain", "--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", "--iidfile", iid}, flags...)
				_, errOut := e.mustRun(append(args, ctx)...)
				b, err := os.ReadFile(iid)
				if err != nil {
					t.Fatal(err)
				}
				ids[i] = string(b)
				if i == 1 && !strings.Contains(errOut, "isolation: chroot") {
					t.Errorf("the chroot build does not name its isolation:\n%s", errOut)
				}
			}
			if ids[0] != ids[1] {
				t.Errorf("namespaces built %s, chroot %s", ids[0], ids[1])
				compareImages(t, e, e, ids[0], ids[1])
			}
		})
	}
}

// A chroot build refuses what needs namespaces, naming the line.
func TestE2EIsolationChrootRefuses(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nRUN --mount=type=cache,target=/c true\n", nil)
	_, errOut, err := e.run("build", "--isolation", "chroot", ctx)
	if err == nil || !strings.Contains(errOut, "Dockerfile:2") || !strings.Contains(errOut, "isolation chroot does not have") {
		t.Errorf("cache mount under chroot: %v\n%s", err, errOut)
	}
	_, errOut, err = e.run("build", "--isolation", "chroot", "--network", "none", ctx)
	if err == nil || !strings.Contains(errOut, "--network none needs a network namespace") {
		t.Errorf("--network none under chroot: %v\n%s", err, errOut)
	}
	if e.user == nil {
		_, errOut, err = e.run("build", "--isolation", "rootless", ctx)
		if err == nil || !strings.Contains(errOut, "--isolation rootless is for an ordinary user") {
			t.Errorf("--isolation rootless as root: %v\n%s", err, errOut)
		}
	}
}
