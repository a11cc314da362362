package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const roiDockerfile = "FROM busybox:fixture\nCOPY a.txt /a.txt\nRUN sleep 1 && cat /a.txt > /b\nCOPY b.txt /b.txt\n"

// reportLine returns the line of the build's output starting with prefix.
func reportLine(t *testing.T, out, prefix string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(l, "=> "); ok && strings.HasPrefix(s, prefix) {
			return s
		}
	}
	t.Errorf("no line starting %q in:\n%s", prefix, out)
	return ""
}

func TestE2ECacheReportLocal(t *testing.T) {
	e := newEnv(t)
	ctx := e.context(roiDockerfile, map[string]string{"a.txt": "a\n", "b.txt": "b\n"})
	dir := filepath.Join(e.dir, "cache")
	_, out := e.mustRun("build", "--progress", "plain", "--cache-to", "type=local,dest="+dir, ctx)
	line := reportLine(t, out, "cache: ")
	if !strings.Contains(line, "0 of 3 steps reused, 3 run") || !strings.Contains(line, "cache-to "+dir+": 3 records, 3 layers written, 0 already there") {
		t.Errorf("first build's report: %s", line)
	}

	// A cached rebuild saves the recorded run time of the RUN (sleep 1).
	meta := filepath.Join(e.dir, "meta.json")
	_, out = e.mustRun("build", "--progress", "plain", "--metadata-file", meta, "--cache-to", "type=local,dest="+dir, ctx)
	line = reportLine(t, out, "cache: ")
	m := regexp.MustCompile(`3 of 3 steps reused, 0 run; ([0-9.]+)s saved; cache-to \S+: 3 records, 0 layers written, 3 already there, 0B in`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("cached rebuild's report: %s", line)
	}
	if saved, _ := strconv.ParseFloat(m[1], 64); saved < 1 {
		t.Errorf("time saved %ss, want at least the RUN's 1s", m[1])
	}
	var md struct {
		Cache cacheMetadata `json:"cache"`
	}
	data, _ := os.ReadFile(meta)
	if err := json.Unmarshal(data, &md); err != nil {
		t.Fatal(err)
	}
	c := md.Cache
	if c.StepsReused != 3 || c.StepsRun != 0 || c.TimeSavedMS < 1000 || len(c.Refs) != 1 || c.Refs[0].Direction != "export" || c.Refs[0].LayersSkipped != 3 {
		t.Errorf("metadata cache section: %+v", c)
	}

	// A changed file: the local cache lacks that step and so does the
	// imported one, and the coverage line says why.
	e.write(ctx, "b.txt", "changed\n")
	_, out = e.mustRun("build", "--progress", "plain", "--cache-from", "type=local,src="+dir, ctx)
	if got := reportLine(t, out, "cache-from "+dir+": 0 of 1 step found"); !strings.Contains(got, "line 4 (COPY b.txt /b.txt) not in cache: b.txt content changed") {
		t.Errorf("coverage line: %s", got)
	}

	// A fresh store takes every step from the imported cache, with its
	// recorded run time, and reports bytes and time per ref.
	e.write(ctx, "b.txt", "b\n")
	fresh := e.fresh("root-fresh")
	fresh.mustRun("load", "-i", e.saveBase())
	_, out = fresh.mustRun("build", "--progress", "plain", "--cache-from", "type=local,src="+dir, ctx)
	line = reportLine(t, out, "cache: ")
	if !regexp.MustCompile(`3 of 3 steps reused, 0 run; [1-9][0-9.]*s saved; cache-from \S+: 3 steps \(3 layers\) imported, [0-9.]+[kM]?B in [0-9.]+s`).MatchString(line) {
		t.Errorf("fresh store's report: %s", line)
	}
	reportLine(t, out, "cache-from "+dir+": 3 of 3 steps found")
}

// saveBase writes the busybox base image to a tar for another store.
func (e *e2eEnv) saveBase() string {
	e.t.Helper()
	p := filepath.Join(e.dir, "busybox.tar")
	if _, err := os.Stat(p); err != nil {
		e.mustRun("save", "-o", p, "busybox:fixture")
	}
	return p
}

func TestE2ECacheReportRegistry(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	ctx := e.context(roiDockerfile, map[string]string{"a.txt": "a\n", "b.txt": "b\n"})
	ref := reg + "/cache/roi:c"
	app := reg + "/roi/app:v1"

	_, out := e.mustRun("build", "--progress", "plain", "--cache-to", "type=registry,ref="+ref, "-o", "type=registry,name="+app, ctx)
	line := reportLine(t, out, "cache: ")
	// The image is pushed first: the cache export then mounts its three
	// layers from that repository of the same registry, uploading none.
	if !regexp.MustCompile(`cache-to `+regexp.QuoteMeta(ref)+`: 3 records, 0 layers written, 3 already there, [0-9.]+[kM]?B in`).MatchString(line) ||
		!strings.Contains(line, "push "+app+": 4 layers pushed, 0 skipped") {
		t.Errorf("first registry build's report: %s", line)
	}
	_, out = e.mustRun("build", "--progress", "plain", "--cache-to", "type=registry,ref="+ref, "-o", "type=registry,name="+app, ctx)
	line = reportLine(t, out, "cache: ")
	if !strings.Contains(line, "0 layers written, 3 already there") || !strings.Contains(line, "push "+app+": 0 layers pushed, 4 skipped") {
		t.Errorf("second registry build's report: %s", line)
	}

	fresh := e.fresh("root-fresh")
	fresh.mustRun("load", "-i", e.saveBase())
	_, out = fresh.mustRun("build", "--progress", "plain", "--cache-from", ref, ctx)
	if !regexp.MustCompile(`cache-from \S+: 3 steps \(3 layers\) imported, [0-9.]+[kM]?B in`).MatchString(reportLine(t, out, "cache: ")) {
		t.Errorf("registry import report:\n%s", out)
	}

	// Unreachable, empty and missing refs are warnings, and the build goes on.
	empty := filepath.Join(e.dir, "empty-cache")
	fresh.mustRun("build", "--progress", "quiet", "--cache-to", "type=local,dest="+empty, e.context("FROM busybox:fixture\nENV A=1\n", nil))
	_, out = fresh.mustRun("build", "--progress", "plain", "--no-cache",
		"--cache-from", "127.0.0.1:1/nothing:here", "--cache-from", reg+"/no/such:cache", "--cache-from", "type=local,src="+empty, ctx)
	for _, want := range []string{
		"[warning] cache-from 127.0.0.1:1/nothing:here is unreachable, building without it",
		"[warning] cache " + reg + "/no/such:cache not found",
		"[warning] cache-from " + empty + " is empty",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no warning %q in:\n%s", want, out)
		}
	}
}
