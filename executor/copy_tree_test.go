package executor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/builder-dev/builder/internal/testenv"
)

// TestCopyTreeOverExisting: the parallel writers of a tree replace what
// is in the way of a file or symlink (a symlink out of the rootfs is not
// written through, a file becomes a symlink), keep hardlinks, and refuse
// to replace a directory with a file.
func TestCopyTreeOverExisting(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	ctxDir, rootfs, victim := copySetup(t)
	for p, target := range map[string]string{"app/f": "../../victim/secret", "app/deep/h": ""} {
		host := filepath.Join(rootfs, p)
		copyCheck(t, os.MkdirAll(filepath.Dir(host), 0o755))
		if target != "" {
			copyCheck(t, os.Symlink(target, host))
		} else {
			copyCheck(t, os.WriteFile(host, []byte("old"), 0o644))
		}
	}
	copyCheck(t, os.WriteFile(filepath.Join(rootfs, "app/lnk"), []byte("a file"), 0o644))
	err := copyRun(t, copyRequest{Sources: []string{"sub"}, Dest: "/app"}, ctxDir, rootfs)
	copyCheckResult(t, err, "", rootfs, victim, map[string]copyWant{
		"app/f": {typ: "file", content: "fff", mtime: true}, "app/deep/h": {typ: "file", content: "hhh"},
		"app/lnk": {typ: "symlink", link: "f"}, "app/hl": {typ: "file", content: "fff"},
	})
	a, _ := os.Stat(filepath.Join(rootfs, "app/f"))
	b, _ := os.Stat(filepath.Join(rootfs, "app/hl"))
	if !os.SameFile(a, b) {
		t.Error("hardlinked context files were not copied as hardlinks")
	}

	ctxDir, rootfs, victim = copySetup(t)
	copyCheck(t, os.MkdirAll(filepath.Join(rootfs, "app/f"), 0o755))
	err = copyRun(t, copyRequest{Sources: []string{"sub"}, Dest: "/app"}, ctxDir, rootfs)
	copyCheckResult(t, err, "cannot replace a directory with a file", rootfs, victim, nil)
}

// TestCopyInterleave: jobs alternate between directories, in their
// order, each a run of up to copyBatch entries of one directory, so that
// parallel writers create files in different directories, each close to
// its last.
func TestCopyInterleave(t *testing.T) {
	var got []string
	var jobs []copyJob
	add := func(dir, name string) {
		jobs = append(jobs, copyJob{dir: dir, run: func(context.Context) error {
			got = append(got, name)
			return nil
		}})
	}
	for i := range 2*copyBatch + 6 {
		add("a", fmt.Sprint("a", i))
		if i < 3 {
			add("b", fmt.Sprint("b", i))
		}
		if i == 0 {
			add(".", "r0")
		}
	}
	var runs []string
	for _, run := range copyInterleave(jobs) {
		got = nil
		copyCheck(t, run(t.Context()))
		runs = append(runs, fmt.Sprintf("%s-%s(%d)", got[0], got[len(got)-1], len(got)))
	}
	want := []string{
		fmt.Sprintf("a0-a%d(%d)", copyBatch-1, copyBatch), "b0-b2(3)", "r0-r0(1)",
		fmt.Sprintf("a%d-a%d(%d)", copyBatch, 2*copyBatch-1, copyBatch),
		fmt.Sprintf("a%d-a%d(6)", 2*copyBatch, 2*copyBatch+5),
	}
	if !slices.Equal(runs, want) {
		t.Errorf("runs %v, want %v", runs, want)
	}
}

// TestCopyAsk: one byte past the rest of a file of known size, whole
// chunks otherwise — a file that grew past its size is not copied a byte
// per call.
func TestCopyAsk(t *testing.T) {
	for _, c := range []struct {
		size, n int64
		want    int
	}{
		{100, 0, 101}, {100, 40, 61}, {100, 100, copyChunk}, {100, 101, copyChunk}, {1, 5000, copyChunk},
		{-1, 0, copyChunk}, {0, 0, copyChunk}, {3 * copyChunk, 0, copyChunk}, {3 * copyChunk, 2*copyChunk + 10, copyChunk - 9},
	} {
		if got := copyAsk(c.size, c.n); got != c.want {
			t.Errorf("copyAsk(%d, %d) = %d, want %d", c.size, c.n, got, c.want)
		}
	}
}

// TestCopierCopiesWholeFiles: the kernel copy moves whole files, empty
// and larger than one call's chunk of a buffer alike.
func TestCopierCopiesWholeFiles(t *testing.T) {
	dir := t.TempDir()
	cp := &copier{}
	for _, size := range []int{0, 1, 300 << 10} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i * 7)
		}
		src, dst := filepath.Join(dir, fmt.Sprint("src", size)), filepath.Join(dir, fmt.Sprint("dst", size))
		copyCheck(t, os.WriteFile(src, data, 0o644))
		in, err := copyOpen(src, os.O_RDONLY, 0)
		copyCheck(t, err)
		out, err := copyOpen(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		copyCheck(t, err)
		copyCheck(t, cp.copyData(out, in, int64(size)))
		copyCheck(t, in.Close())
		copyCheck(t, out.Close())
		got, err := os.ReadFile(dst)
		copyCheck(t, err)
		if string(got) != string(data) {
			t.Errorf("copy of %d bytes: got %d bytes, differing", size, len(got))
		}
	}
	// A file that grew or shrank since it was selected is still copied
	// whole: the size is a hint for stopping one call early, not a limit.
	for _, hint := range []int64{1, 100 << 10, 1 << 20} {
		src := filepath.Join(dir, "src307200")
		in, err := copyOpen(src, os.O_RDONLY, 0)
		copyCheck(t, err)
		dst := filepath.Join(dir, fmt.Sprint("hint", hint))
		out, err := copyOpen(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		copyCheck(t, err)
		copyCheck(t, cp.copyData(out, in, hint))
		in.Close()
		out.Close()
		a, _ := os.ReadFile(src)
		b, _ := os.ReadFile(dst)
		if string(a) != string(b) {
			t.Errorf("copy with size hint %d: got %d of %d bytes", hint, len(b), len(a))
		}
	}
	// The buffered way, as where no kernel copy is possible.
	cp.method.Store(copyByBuffer)
	src := filepath.Join(dir, "src307200")
	in, err := copyOpen(src, os.O_RDONLY, 0)
	copyCheck(t, err)
	out, err := copyOpen(filepath.Join(dir, "buffered"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	copyCheck(t, err)
	copyCheck(t, cp.copyData(out, in, -1))
	in.Close()
	out.Close()
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(filepath.Join(dir, "buffered"))
	if string(a) != string(b) {
		t.Error("buffered copy differs")
	}
}
