package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// --progress rawjson is buildx's stream: one SolveStatus per line, steps
// as vertexes with start and completion times (cached on a rebuild), RUN
// output as logs of its vertex with timestamps.
func TestE2EProgressRawJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := e.context("FROM busybox:fixture\nRUN echo hello-raw && echo second\nENV A=1\n", nil)
	parse := func(stderr string) (map[string]vertexStatus, []vertexLog) {
		t.Helper()
		vs := map[string]vertexStatus{}
		var logs []vertexLog
		sc := bufio.NewScanner(strings.NewReader(stderr))
		for sc.Scan() {
			var st solveStatus
			dec := json.NewDecoder(strings.NewReader(sc.Text()))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&st); err != nil {
				t.Fatalf("line is not a SolveStatus: %v\n%s", err, sc.Text())
			}
			for _, v := range st.Vertexes {
				if prev, ok := vs[v.Digest]; ok && prev.Name != v.Name {
					t.Errorf("vertex %s renamed from %q to %q", v.Digest, prev.Name, v.Name)
				}
				vs[v.Digest] = v
			}
			logs = append(logs, st.Logs...)
		}
		return vs, logs
	}
	_, stderr := e.mustRun("build", "--progress", "rawjson", "--network", "none", dir)
	vs, logs := parse(stderr)
	var run *vertexStatus
	for _, v := range vs {
		if strings.Contains(v.Name, "RUN echo hello-raw") {
			run = &v
		}
		if v.Started == nil || v.Completed == nil || v.Completed.Before(*v.Started) || time.Since(*v.Started) > time.Hour {
			t.Errorf("vertex %q: started %v, completed %v", v.Name, v.Started, v.Completed)
		}
	}
	if run == nil || run.Cached || run.Error != "" || run.CacheReason == "" {
		t.Fatalf("RUN vertex %+v in %v", run, vs)
	}
	var out []string
	for _, l := range logs {
		if l.Vertex != run.Digest || l.Stream != 1 || l.Timestamp.IsZero() {
			t.Errorf("log %+v: want the RUN's vertex, stream 1 and a timestamp", l)
		}
		out = append(out, string(l.Data))
	}
	if got := strings.Join(out, ""); got != "hello-raw\nsecond\n" {
		t.Errorf("RUN logs %q", got)
	}
	_, stderr = e.mustRun("build", "--progress", "rawjson", "--network", "none", dir)
	vs, _ = parse(stderr)
	if v, ok := vs[run.Digest]; !ok || !v.Cached {
		t.Errorf("rebuild: RUN vertex %+v, want cached", v)
	}
}

func TestCLIMissingContext(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	code, _, stderr := runBin(t, "--root", root, "build", "/nonexistent/context")
	if code != 1 || !strings.Contains(stderr, `unable to prepare context: path "/nonexistent/context" not found`) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
