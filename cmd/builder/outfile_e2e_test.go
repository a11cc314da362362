package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestE2EOutputsIntoPipes: every file a user names for builder to write
// — save -o, an archive's dest=, --iidfile, --metadata-file, builds
// export -o — may be a named pipe or a device (/dev/stdout, /dev/null):
// it is written into, and stays what it was. builder used to rename a
// temporary file over it, which as root turned /dev/null into a regular
// file for the whole machine.
func TestE2EOutputsIntoPipes(t *testing.T) {
	e := newEnv(t)
	dir := e.context("FROM busybox:fixture\nCOPY a /a\n", map[string]string{"a": "x"})
	n := 0
	// piped runs builder with PIPE in args replaced by a new named pipe,
	// and returns what a reader of the pipe got.
	piped := func(args ...string) []byte {
		t.Helper()
		n++
		fifo := filepath.Join(e.dir, "pipe"+string(rune('a'+n)))
		if err := syscall.Mkfifo(fifo, 0o666); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(fifo, 0o666); err != nil {
			t.Fatal(err)
		}
		got := make(chan []byte, 1)
		go func() {
			f, err := os.Open(fifo)
			if err != nil {
				got <- nil
				return
			}
			defer f.Close()
			b, _ := io.ReadAll(f)
			got <- b
		}()
		for i, a := range args {
			args[i] = strings.ReplaceAll(a, "PIPE", fifo)
		}
		e.mustRun(args...)
		if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
			t.Fatalf("builder %v replaced the pipe (%v, %v)", args, fi.Mode(), err) // its reader waits forever
		}
		return <-got
	}
	if id := piped("build", "--progress", "quiet", "-t", "pipe:1", "--iidfile", "PIPE", dir); !bytes.HasPrefix(id, []byte("sha256:")) {
		t.Errorf("--iidfile into a pipe: %q", id)
	}
	var md map[string]any
	if err := json.Unmarshal(piped("build", "--progress", "quiet", "--metadata-file", "PIPE", dir), &md); err != nil || md["containerimage.digest"] == nil {
		t.Errorf("--metadata-file into a pipe: %v %v", md, err)
	}
	for _, args := range [][]string{
		{"build", "--progress", "quiet", "-o", "type=docker,dest=PIPE", dir},
		{"build", "--progress", "quiet", "-o", "type=oci,dest=PIPE", dir},
		{"save", "-o", "PIPE", "pipe:1"},
	} {
		names := tarNamesOf(t, piped(args...))
		if !names["index.json"] {
			t.Errorf("builder %v into a pipe: the archive holds %v", args, names)
		}
	}
	out, _ := e.mustRun("builds", "ls", "--format", "json")
	var rows []buildSummary
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) == 0 {
		t.Fatalf("builds ls: %v\n%s", err, out)
	}
	if names := tarNamesOf(t, piped("builds", "export", rows[0].ID, "-o", "PIPE")); !names["record.json"] {
		t.Errorf("builds export into a pipe: %v", names)
	}
	e.mustRun("save", "-o", os.DevNull, "pipe:1")
	if fi, err := os.Lstat(os.DevNull); err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
		os.Remove(os.DevNull) // put the machine's /dev/null back before failing
		_ = syscall.Mknod(os.DevNull, syscall.S_IFCHR|0o666, 1<<8|3)
		_ = os.Chmod(os.DevNull, 0o666)
		t.Fatalf("save -o %s replaced it (%v, %v)", os.DevNull, fi.Mode(), err)
	}
}

// tarNamesOf lists the names in the tar b.
func tarNamesOf(t *testing.T, b []byte) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		names[hdr.Name] = true
	}
}
