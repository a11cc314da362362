package main

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/cache"
)

func TestE2EBuildRecords(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nARG V=1\nCOPY a.txt /a.txt\nRUN --mount=type=secret,id=tok cat /a.txt > /b.txt && echo run-output-$V\n",
		map[string]string{"a.txt": "hello\n"})
	secretFile := e.write(e.dir, "tok", "s3cr3t-never-recorded")
	_, first := e.mustRun("build", "--progress", "plain", "--build-arg", "V=7", "--secret", "id=tok,src="+secretFile, "-t", "rec:1", ctx)

	// The record survives the process (every command is a restart).
	out, _ := e.mustRun("builds", "inspect", "--format", "json", "latest")
	var rec cache.BuildRecord
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("inspect json: %v\n%s", err, out)
	}
	req := rec.Request
	if rec.Status != cache.BuildCompleted || req == nil || req.ContextDir != ctx || req.Dockerfile != filepath.Join(ctx, "Dockerfile") ||
		!strings.Contains(req.DockerfileText, "RUN --mount=type=secret") || len(req.Platforms) != 1 ||
		strings.Join(req.BuildArgs, " ") != "V=7" || len(req.BaseImages) != 1 || req.BaseImages[0].Ref != "busybox:fixture" {
		t.Errorf("record lacks the request: %+v / %+v", rec, req)
	}
	if len(rec.Outputs) != 1 || rec.Outputs[0].Type != "image" || rec.Outputs[0].Digest != rec.ImageDigest || rec.ImageDigest == "" {
		t.Errorf("outputs %+v, image %s", rec.Outputs, rec.ImageDigest)
	}
	var copyStep *cache.StepRecord
	for i, s := range rec.Steps {
		if strings.HasPrefix(s.Instruction, "COPY") {
			copyStep = &rec.Steps[i]
		}
	}
	if copyStep == nil || copyStep.Cache != "miss" || copyStep.Reason != "no earlier build" || copyStep.Layer == "" || copyStep.Size <= 0 {
		t.Errorf("COPY step record: %+v", copyStep)
	}
	// Secret values are kept nowhere in the records or logs.
	filepath.WalkDir(filepath.Join(e.root, "builds"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), "s3cr3t-never-recorded") {
				t.Errorf("%s holds the secret's value", p)
			}
		}
		return nil
	})

	// builds logs replays the progress output as it was printed.
	logs, _ := e.mustRun("builds", "logs", rec.ID[:8])
	if logs != first {
		t.Errorf("builds logs differs from the build's output:\n--- printed\n%s\n--- replayed\n%s", first, logs)
	}
	if !strings.Contains(logs, "run-output-7") {
		t.Errorf("log lacks the RUN output:\n%s", logs)
	}

	// A quiet build and a failed build are recorded with their log too.
	e.mustRun("build", "-q", "--build-arg", "V=8", "--secret", "id=tok,src="+secretFile, ctx)
	quietLog, _ := e.mustRun("builds", "logs", "latest")
	if !strings.Contains(quietLog, "run-output-8") || !strings.Contains(quietLog, "cache miss: build arg V changed (7 → 8)") {
		t.Errorf("log of a quiet build:\n%s", quietLog)
	}
	bad := e.context("FROM busybox:fixture\nRUN echo about-to-fail && exit 3\n", nil)
	if _, _, err := e.run("build", "--progress", "tty", bad); err == nil {
		t.Fatal("failing build succeeded")
	}
	failLog, _ := e.mustRun("builds", "logs", "latest")
	if !strings.Contains(failLog, "about-to-fail") || !strings.Contains(failLog, "ERROR:") {
		t.Errorf("log of a failed build:\n%s", failLog)
	}

	out, _ = e.mustRun("builds", "ls")
	if n := strings.Count(out, "\n"); n != 5 { // header, busybox base, 3 builds
		t.Errorf("builds ls: %d lines, want 5:\n%s", n, out)
	}
	if !strings.Contains(out, "failed") || !strings.Contains(out, "rec:1") || !strings.Contains(out, "2 run, 0 cached") {
		t.Errorf("builds ls:\n%s", out)
	}
	out, _ = e.mustRun("builds", "ls", "--format", "json", "--filter", "status=failed")
	var rows []buildSummary
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 || rows[0].Status != "failed" || !strings.Contains(rows[0].Error, "exit code: 3") {
		t.Errorf("builds ls --filter status=failed: %v\n%s", err, out)
	}
	out, _ = e.mustRun("builds", "inspect", rec.ID)
	for _, want := range []string{"Status:", "completed", "Build arg:", "V=7", "Secret:", "id=tok,src=" + secretFile + " (value not recorded)",
		"Base image:", "busybox:fixture@sha256:", "COPY a.txt /a.txt", "no earlier build"} {
		if !strings.Contains(out, want) {
			t.Errorf("builds inspect lacks %q:\n%s", want, out)
		}
	}

	// export writes the record, the Dockerfile and the log.
	bundle := filepath.Join(e.dir, "build.tar")
	e.mustRun("builds", "export", rec.ID, "-o", bundle)
	files := readTar(t, bundle)
	if files["build.log"] != first || !strings.Contains(files["Dockerfile"], "COPY a.txt") || !strings.Contains(files["record.json"], rec.ID) {
		t.Errorf("export holds %d files: %v", len(files), keys(files))
	}

	// rm removes a record; prune keeps the newest --keep-builds.
	e.mustRun("builds", "rm", rec.ID)
	if _, errOut, err := e.run("builds", "inspect", rec.ID); err == nil || !strings.Contains(errOut, "no build record") {
		t.Errorf("inspect of a removed build: %v\n%s", err, errOut)
	}
	e.mustRun("prune", "--keep-builds", "1")
	out, _ = e.mustRun("builds", "ls")
	if n := strings.Count(out, "\n"); n != 2 {
		t.Errorf("after prune --keep-builds 1, builds ls has %d lines:\n%s", n, out)
	}
	if !strings.Contains(out, "failed") {
		t.Errorf("prune kept an older build instead of the newest:\n%s", out)
	}
	if logs, _ := os.ReadDir(filepath.Join(e.root, "builds")); countSuffix(logs, ".log") != 1 {
		t.Errorf("prune left %d logs, want 1", countSuffix(logs, ".log"))
	}
}

func countSuffix(entries []os.DirEntry, suffix string) int {
	n := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), suffix) {
			n++
		}
	}
	return n
}

func readTar(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[hdr.Name] = string(b)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
