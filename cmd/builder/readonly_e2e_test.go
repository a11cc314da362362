package main

import (
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestE2EReadOnlyStore: a store on a file system that became read-only.
// Reading commands still work; a build fails with a clear error naming a
// path under the store and the cause; nothing is lost, and once the file
// system is writable again the next build reuses the cache.
func TestE2EReadOnlyStore(t *testing.T) {
	e, _ := newEnvOnTmpfs(t, "64m")
	dir := e.context("FROM busybox:fixture\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n", map[string]string{"a.txt": "a\n"})
	e.build(dir, "-t", "ro:1")
	mnt := filepath.Dir(e.root)
	remount := func(flags uintptr) {
		t.Helper()
		if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_REMOUNT|flags, ""); err != nil {
			t.Fatalf("remount %s: %v", mnt, err)
		}
	}
	remount(unix.MS_RDONLY)
	restored := false
	defer func() {
		if !restored {
			remount(0)
		}
	}()

	for _, args := range [][]string{{"images"}, {"history", "ro:1"}, {"inspect", "ro:1"}} {
		out, errOut, err := e.run(args...)
		if err != nil {
			t.Errorf("builder %s on a read-only store: %v\n%s", strings.Join(args, " "), err, errOut)
		} else if !strings.Contains(out, "ro") && args[0] == "images" {
			t.Errorf("images on a read-only store does not list ro:1:\n%s", out)
		}
	}
	e.write(dir, "a.txt", "changed\n")
	_, errOut, err := e.run("build", "--progress", "plain", "-t", "ro:2", dir)
	if err == nil {
		t.Fatalf("build on a read-only store succeeded:\n%s", errOut)
	}
	if !strings.Contains(errOut, "read-only file system") || !strings.Contains(errOut, e.root) {
		t.Errorf("build error does not name the read-only store path under %s:\n%s", e.root, errOut)
	}
	t.Logf("build on a read-only store:\n%s", errOut)

	remount(0)
	restored = true
	checkStore(t, e.root)
	checkNoTemporaries(t, e.root)
	e.write(dir, "a.txt", "a\n")
	e.build(dir, "-t", "ro:1").wantAllHits(t)
}
