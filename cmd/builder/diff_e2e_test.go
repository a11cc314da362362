package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/builder-dev/builder/cache"
)

func TestE2EDiffBuilds(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nCOPY a.txt /a.txt\nCOPY src/ /app/\nRUN cat /app/main.go > /out\nENV X=1\n",
		map[string]string{"a.txt": "a\n", "src/main.go": "package one\n", "src/util.go": "package util\n"})
	e.mustRun("build", "-q", "-t", "d:1", ctx)
	first := latestBuildID(e)
	e.write(ctx, "src/main.go", "package two\n")
	e.mustRun("build", "-q", "-t", "d:2", ctx)
	second := latestBuildID(e)

	out, _ := e.mustRun("diff", first, second)
	for _, want := range []string{
		"line 3   [3/4] COPY src/ /app/\n           changed: src/main.go content changed",
		"line 4   [4/4] RUN cat /app/main.go > /out\n           changed: parent step changed (line 3)",
		"layer 3 changed: COPY src/ /app/",
		"changed  /app/main.go: digest sha256:",
		"changed  /out: digest sha256:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("diff of the builds lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "/a.txt") || strings.Contains(out, "util.go") {
		t.Errorf("diff names unchanged files:\n%s", out)
	}

	out, _ = e.mustRun("diff", "--format", "json", first, "latest")
	var rep diffReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("diff json: %v\n%s", err, out)
	}
	var changed []string
	for _, s := range rep.Steps {
		if s.Status != "same" {
			changed = append(changed, s.Instruction+": "+s.Reason)
		}
	}
	if strings.Join(changed, "|") != "COPY src/ /app/: src/main.go content changed|RUN cat /app/main.go > /out: parent step changed (line 3)" ||
		rep.Image == nil || rep.Image.Identical {
		t.Errorf("diff json steps %q, image %+v", changed, rep.Image)
	}

	// Images compare by layers and config; an image with itself is the same.
	out, _ = e.mustRun("diff", "d:1", "docker-image://d:2")
	if !strings.Contains(out, "changed  /app/main.go") || strings.Contains(out, "Steps:") {
		t.Errorf("diff of images:\n%s", out)
	}
	out, _ = e.mustRun("diff", "d:2", second)
	if !strings.Contains(out, "No differences.") {
		t.Errorf("an image and the build that made it differ:\n%s", out)
	}
	if _, errOut, err := e.run("diff", "d:1", "nosuch:tag"); err == nil || !strings.Contains(errOut, "neither a build record nor an image") {
		t.Errorf("diff with a missing image: %v\n%s", err, errOut)
	}
}

// latestBuildID is the ID of the newest build record of e's store.
func latestBuildID(e *e2eEnv) string {
	e.t.Helper()
	out, _ := e.mustRun("builds", "inspect", "--format", "json", "latest")
	var rec cache.BuildRecord
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		e.t.Fatal(err)
	}
	return rec.ID
}
