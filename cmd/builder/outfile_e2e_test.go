package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/builder-dev/builder/internal/testenv"
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
		got := testenv.ReadFIFO(t, fifo)
		for i, a := range args {
			args[i] = strings.ReplaceAll(a, "PIPE", fifo)
		}
		e.mustRun(args...)
		if !testenv.IsFIFO(fifo) {
			t.Fatalf("builder %v replaced the pipe", args)
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
		if !tarHas(t, piped(args...), "index.json", "") {
			t.Errorf("builder %v into a pipe: no index.json in what it wrote", args)
		}
	}
	out, _ := e.mustRun("builds", "ls", "--format", "json")
	var rows []buildSummary
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) == 0 {
		t.Fatalf("builds ls: %v\n%s", err, out)
	}
	if !tarHas(t, piped("builds", "export", rows[0].ID, "-o", "PIPE"), "record.json", "") {
		t.Error("builds export into a pipe: no record.json in what it wrote")
	}
	e.mustRun("save", "-o", os.DevNull, "pipe:1")
	if fi, err := os.Lstat(os.DevNull); err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
		os.Remove(os.DevNull) // put the machine's /dev/null back before failing
		_ = syscall.Mknod(os.DevNull, syscall.S_IFCHR|0o666, 1<<8|3)
		_ = os.Chmod(os.DevNull, 0o666)
		t.Fatalf("save -o %s replaced it (%v, %v)", os.DevNull, fi.Mode(), err)
	}
}
