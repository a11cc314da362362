package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The tests in this file prove the layer cache semantics of issue #4 on the
// real binary: which steps hit and miss, and why, as seen in the
// --metadata-file JSON, the plain progress output and `builder history`.

// buildMeta is the --metadata-file document.
type buildMeta struct {
	ImageDigest  string      `json:"image.digest"`
	ConfigDigest string      `json:"config.digest"`
	Tags         []string    `json:"tags"`
	Steps        []stepMeta  `json:"steps"`
	raw          []byte      // the file as written
	progress     string      // the plain progress output (stderr)
	rawSteps     []rawObject // steps as generic objects, for schema checks
}

type rawObject map[string]json.RawMessage

type stepMeta struct {
	Stage       string `json:"stage"`
	Line        int    `json:"line"`
	Instruction string `json:"instruction"`
	Cache       string `json:"cache"`
	Reason      string `json:"reason"`
	Key         string `json:"key"`
	DurationMS  int64  `json:"duration_ms"`
	Layer       string `json:"layer"`
}

// build runs `builder build --progress plain --metadata-file F args... dir`
// and returns the parsed metadata.
func (e *e2eEnv) build(dir string, args ...string) *buildMeta {
	e.t.Helper()
	mf := filepath.Join(e.dir, "meta-"+strings.ReplaceAll(e.t.Name(), "/", "_")+".json")
	all := append([]string{"build", "--progress", "plain", "--metadata-file", mf}, args...)
	_, errOut := e.mustRun(append(all, dir)...)
	m := readBuildMeta(e.t, mf)
	m.progress = errOut
	return m
}

// readBuildMeta reads and decodes a --metadata-file.
func readBuildMeta(t *testing.T, path string) *buildMeta {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read metadata file: %v", err)
	}
	m := &buildMeta{raw: raw}
	if err := json.Unmarshal(raw, m); err != nil {
		t.Fatalf("decode metadata %s: %v", raw, err)
	}
	var generic struct {
		Steps []rawObject `json:"steps"`
	}
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatalf("decode metadata steps: %v", err)
	}
	m.rawSteps = generic.Steps
	return m
}

// step returns the step whose instruction starts with prefix (the first one
// in stage when stage is not "").
func (m *buildMeta) step(t *testing.T, stage, prefix string) stepMeta {
	t.Helper()
	for _, s := range m.Steps {
		if (stage == "" || s.Stage == stage) && strings.HasPrefix(s.Instruction, prefix) {
			return s
		}
	}
	t.Fatalf("no step %q in stage %q; steps:\n%s", prefix, stage, m.raw)
	return stepMeta{}
}

// hasLayerDir reports whether the step's layer is in the layer store.
func (s stepMeta) hasLayerDir(root string) bool {
	_, err := os.Stat(filepath.Join(root, "snapshots", strings.TrimPrefix(s.Layer, "sha256:"), "layer.json"))
	return s.Layer != "" && err == nil
}

// wantAllHits fails unless every step hit the cache.
func (m *buildMeta) wantAllHits(t *testing.T) {
	t.Helper()
	for _, s := range m.Steps {
		if s.Cache != "hit" && (s.Cache != "none" || s.Key != "") {
			t.Errorf("line %d %q: cache %s (%s), want hit", s.Line, s.Instruction, s.Cache, s.Reason)
		}
	}
	if strings.Contains(m.progress, "cache miss") {
		t.Errorf("progress shows a miss on an all-hit build:\n%s", m.progress)
	}
}

// wantCache checks one step's cache result and, for a miss, that its reason
// contains reason and that the progress output shows it.
func (m *buildMeta) wantCache(t *testing.T, stage, prefix, cache, reason string) {
	t.Helper()
	s := m.step(t, stage, prefix)
	if s.Cache != cache {
		t.Errorf("%q: cache %s (reason %q), want %s", prefix, s.Cache, s.Reason, cache)
		return
	}
	if cache == "miss" && !strings.Contains(s.Reason, reason) {
		t.Errorf("%q: reason %q, want it to contain %q", prefix, s.Reason, reason)
	}
	if cache == "miss" && !strings.Contains(m.progress, "(cache miss: "+s.Reason+")") {
		t.Errorf("%q: progress output lacks the reason %q:\n%s", prefix, s.Reason, m.progress)
	}
}

func (e *e2eEnv) chmod(p string, mode os.FileMode) {
	e.t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		e.t.Fatal(err)
	}
}

const semanticsDockerfile = `FROM busybox:fixture
RUN echo base > /base.txt
ARG V=1
COPY a.txt /a.txt
ENV E=1
COPY b.txt /b.txt
RUN cat /a.txt /b.txt > /ab.txt && echo "$V $E" >> /ab.txt
WORKDIR /w
COPY ctx/ /ctx/
RUN ls /ctx > /w/list.txt
CMD ["cat", "/ab.txt"]
`

func semanticsContext(e *e2eEnv) string {
	return e.context(semanticsDockerfile, map[string]string{
		"a.txt": "a\n", "b.txt": "b\n", "ctx/one.txt": "1\n", "ignored.txt": "x\n",
		".dockerignore": "ignored.txt\n",
	})
}

func TestE2ECacheSemantics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := semanticsContext(e)
	first := e.build(dir, "-t", "sem:1")
	for _, s := range first.Steps {
		if s.Instruction == "FROM busybox:fixture" || !strings.HasPrefix(s.Instruction, "RUN") && !strings.HasPrefix(s.Instruction, "COPY") {
			continue
		}
		if s.Cache != "miss" || s.Reason != "no earlier build" {
			t.Errorf("first build: %q cache %s reason %q, want miss: no earlier build", s.Instruction, s.Cache, s.Reason)
		}
	}

	t.Run("unchanged rebuild hits", func(t *testing.T) {
		m := e.build(dir, "-t", "sem:1")
		m.wantAllHits(t)
		if m.ImageDigest != first.ImageDigest {
			t.Errorf("image digest changed on a no-op rebuild: %s → %s", first.ImageDigest, m.ImageDigest)
		}
		if strings.Count(m.progress, "CACHED") < 6 {
			t.Errorf("progress should show CACHED for every keyed step:\n%s", m.progress)
		}
	})
	t.Run("mtime-only touch hits", func(t *testing.T) {
		future := time.Now().Add(time.Hour)
		for _, f := range []string{"a.txt", "b.txt", "ctx/one.txt"} {
			if err := os.Chtimes(filepath.Join(dir, f), future, future); err != nil {
				t.Fatal(err)
			}
		}
		e.build(dir).wantAllHits(t)
	})
	t.Run("dockerignored change hits", func(t *testing.T) {
		e.write(dir, "ignored.txt", "changed\n")
		e.build(dir).wantAllHits(t)
	})
	t.Run("comments and blank lines hit", func(t *testing.T) {
		commented := "# a comment\n\n" + strings.ReplaceAll(semanticsDockerfile, "\nCOPY", "\n\n# copy next\nCOPY")
		e.write(dir, "Dockerfile", commented)
		m := e.build(dir)
		m.wantAllHits(t)
		if m.step(t, "", "CMD").Line == first.step(t, "", "CMD").Line {
			t.Errorf("the commented Dockerfile should have moved the lines")
		}
		e.write(dir, "Dockerfile", semanticsDockerfile)
	})
	t.Run("content change misses from the first COPY selecting it", func(t *testing.T) {
		e.write(dir, "b.txt", "b2\n")
		m := e.build(dir)
		m.wantCache(t, "", "RUN echo base", "hit", "")
		m.wantCache(t, "", "COPY a.txt", "hit", "")
		m.wantCache(t, "", "COPY b.txt", "miss", "b.txt content changed")
		m.wantCache(t, "", "RUN cat", "miss", "parent step rebuilt (line 6)")
		m.wantCache(t, "", "RUN ls", "miss", "parent step rebuilt")
	})
	t.Run("chmod misses", func(t *testing.T) {
		e.chmod(filepath.Join(dir, "a.txt"), 0o755)
		m := e.build(dir)
		m.wantCache(t, "", "RUN echo base", "hit", "")
		m.wantCache(t, "", "COPY a.txt", "miss", "mode of a.txt changed (0644 → 0755)")
	})
	t.Run("files added", func(t *testing.T) {
		for _, f := range []string{"two.txt", "three.txt", "four.txt"} {
			e.write(filepath.Join(dir, "ctx"), f, f)
		}
		m := e.build(dir)
		m.wantCache(t, "", "COPY b.txt", "hit", "")
		m.wantCache(t, "", "COPY ctx/", "miss", "3 files added")
		m.wantCache(t, "", "RUN ls", "miss", "parent step rebuilt (line 9)")
	})
	t.Run("build arg misses from the first RUN after its ARG", func(t *testing.T) {
		m := e.build(dir, "--build-arg", "V=2")
		m.wantCache(t, "", "RUN echo base", "hit", "")
		m.wantCache(t, "", "COPY a.txt", "hit", "")
		m.wantCache(t, "", "COPY b.txt", "hit", "")
		m.wantCache(t, "", "RUN cat", "miss", "build arg V changed (1 → 2)")
		// COPY ctx/ follows the rebuilt RUN: its parent changed.
		m.wantCache(t, "", "COPY ctx/", "miss", "parent step rebuilt (line 8)")
		m.wantCache(t, "", "RUN ls", "miss", "build arg V changed (1 → 2)")
	})
	t.Run("proxy build args are not in the key", func(t *testing.T) {
		e.build(dir, "--build-arg", "V=2", "--build-arg", "HTTP_PROXY=http://proxy.invalid:3128").wantAllHits(t)
		e.build(dir, "--build-arg", "V=2", "--build-arg", "HTTP_PROXY=http://other.invalid:8080",
			"--build-arg", "no_proxy=example.com").wantAllHits(t)
	})
	t.Run("ENV change misses at the next RUN, not at the COPY between", func(t *testing.T) {
		e.write(dir, "Dockerfile", strings.Replace(semanticsDockerfile, "ENV E=1", "ENV E=2", 1))
		m := e.build(dir, "--build-arg", "V=2")
		m.wantCache(t, "", "COPY b.txt", "hit", "")
		m.wantCache(t, "", "RUN cat", "miss", "env E changed (1 → 2)")
		m.wantCache(t, "", "COPY ctx/", "miss", "parent step rebuilt (line 8)")
		m.wantCache(t, "", "RUN ls", "miss", "env E changed (1 → 2)")
	})
	t.Run("instruction changed", func(t *testing.T) {
		e.write(dir, "Dockerfile", strings.Replace(semanticsDockerfile, "echo base", "echo base2", 1))
		m := e.build(dir, "--build-arg", "V=2")
		m.wantCache(t, "", "RUN echo base2", "miss", "instruction changed")
		m.wantCache(t, "", "COPY a.txt", "miss", "parent step rebuilt (line 2)")
	})
}

func TestE2ECacheUnsetUnusedArg(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	df := "FROM busybox:fixture\nCOPY a.txt /a\nRUN cat /a > /b\n"
	dir := e.context(df, map[string]string{"a.txt": "a\n"})
	e.build(dir)
	e.build(dir).wantAllHits(t)
	e.write(dir, "Dockerfile", "FROM busybox:fixture\nARG UNUSED\nCOPY a.txt /a\nARG ALSO_UNUSED\nRUN cat /a > /b\n")
	m := e.build(dir)
	m.wantAllHits(t)
	if got := len(m.Steps); got != 5 {
		t.Errorf("got %d step entries, want 5 (ARG lines included):\n%s", got, m.raw)
	}
	e.build(dir).wantAllHits(t)
}

func TestE2ECacheUnneededStage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	df := `FROM busybox:fixture AS other
COPY o.txt /o
RUN cat /o > /o2

FROM busybox:fixture AS final
COPY f.txt /f
RUN cat /f > /f2
`
	dir := e.context(df, map[string]string{"o.txt": "o\n", "f.txt": "f\n"})
	e.build(dir)
	e.write(dir, "o.txt", "changed\n")
	m := e.build(dir)
	m.wantAllHits(t)
	for _, s := range m.Steps {
		if s.Stage == "other" {
			t.Errorf("stage other is not needed by the target but was built: %+v", s)
		}
	}
	m = e.build(dir, "--target", "other")
	m.wantCache(t, "other", "COPY o.txt", "miss", "")
}

func TestE2ECacheNoCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	df := `FROM busybox:fixture AS dep
RUN echo dep > /dep.txt

FROM busybox:fixture
COPY a.txt /a
COPY --from=dep /dep.txt /dep.txt
RUN cat /a /dep.txt > /out
`
	dir := e.context(df, map[string]string{"a.txt": "a\n"})
	first := e.build(dir, "-t", "nc:1")
	recordTimes := keyRecordTimes(t, e.root, first)

	m := e.build(dir, "--no-cache", "-t", "nc:1")
	for _, s := range m.Steps {
		if s.Key == "" || strings.HasPrefix(s.Instruction, "FROM") {
			continue // nothing runs for metadata steps and FROM
		}
		if s.Cache != "miss" || s.Reason != "--no-cache" {
			t.Errorf("--no-cache: %q cache %s reason %q, want miss: --no-cache", s.Instruction, s.Cache, s.Reason)
		}
		if s.Key != first.step(t, s.Stage, s.Instruction).Key {
			t.Errorf("--no-cache changed the key of %q", s.Instruction)
		}
	}
	after := keyRecordTimes(t, e.root, m)
	for k, created := range recordTimes {
		if !after[k].After(created) {
			t.Errorf("--no-cache did not refresh cache entry %s (created %v, now %v)", k, created, after[k])
		}
	}
	e.build(dir).wantAllHits(t)

	m = e.build(dir, "--no-cache-filter", "dep")
	m.wantCache(t, "dep", "RUN echo dep", "miss", "--no-cache-filter")
	m.wantCache(t, "stage-1", "COPY a.txt", "hit", "")
	m.wantCache(t, "stage-1", "COPY --from=dep", "hit", "")
	m.wantCache(t, "stage-1", "RUN cat", "hit", "")
}

// keyRecordTimes returns the Created time of the cache record of each
// keyed step of a build.
func keyRecordTimes(t *testing.T, root string, m *buildMeta) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	for _, s := range m.Steps {
		if s.Key == "" || strings.HasPrefix(s.Instruction, "FROM") {
			continue
		}
		p := filepath.Join(root, "keys", strings.TrimPrefix(s.Key, "sha256:")+".json")
		var rec struct {
			Created time.Time `json:"created"`
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &rec); err != nil {
			t.Fatalf("decode %s: %v", p, err)
		}
		out[s.Key] = rec.Created
	}
	if len(out) == 0 {
		t.Fatalf("no keyed steps in %s", m.raw)
	}
	return out
}

func TestE2ECacheBaseImageChanged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := e.context("FROM busybox:fixture\nCOPY a.txt /a\n", map[string]string{"a.txt": "a\n"})
	e.build(dir)
	base := e.context("FROM busybox:fixture\nRUN echo v2 > /version\n", nil)
	e.mustRun("build", "-t", "busybox:fixture", base)
	m := e.build(dir)
	m.wantCache(t, "", "COPY a.txt", "miss", "base image changed (sha256:")
}

func TestE2EMetadataFileSchema(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	df := `FROM busybox:fixture AS build
ARG V=1
RUN echo $V > /v

FROM busybox:fixture
LABEL a=b
COPY --from=build /v /v
ENV X=1
USER 0
CMD ["cat", "/v"]
`
	dir := e.context(df, nil)
	m := e.build(dir, "-t", "meta:1", "-t", "meta:2")
	var top map[string]json.RawMessage
	if err := json.Unmarshal(m.raw, &top); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"image.digest", "config.digest", "tags", "steps"} {
		if _, ok := top[k]; !ok {
			t.Errorf("metadata lacks %q:\n%s", k, m.raw)
		}
	}
	if !strings.HasPrefix(m.ImageDigest, "sha256:") || !strings.HasPrefix(m.ConfigDigest, "sha256:") {
		t.Errorf("digests: image %q config %q", m.ImageDigest, m.ConfigDigest)
	}
	if !slices.Equal(m.Tags, []string{"meta:1", "meta:2"}) {
		t.Errorf("tags %v", m.Tags)
	}
	out, _ := e.mustRun("images")
	if !strings.Contains(out, strings.TrimPrefix(m.ImageDigest, "sha256:")[:12]) && !strings.Contains(out, strings.TrimPrefix(m.ConfigDigest, "sha256:")[:12]) {
		t.Errorf("builder images does not list the image of the metadata file:\n%s", out)
	}
	checkStepSchema(t, m)
	wantLines := []int{1, 2, 3, 5, 6, 7, 8, 9, 10}
	var lines []int
	for _, s := range m.Steps {
		lines = append(lines, s.Line)
	}
	if !slices.Equal(lines, wantLines) {
		t.Errorf("step lines %v, want one entry per instruction %v", lines, wantLines)
	}
	for _, s := range m.Steps {
		keyed := strings.HasPrefix(s.Instruction, "RUN") || strings.HasPrefix(s.Instruction, "COPY")
		switch {
		case keyed && (s.Key == "" || s.Layer == "" || s.Cache != "miss"):
			t.Errorf("%q: keyed step should have a key, a layer and miss on the first build: %+v", s.Instruction, s)
		case !keyed && !strings.HasPrefix(s.Instruction, "FROM") && (s.Cache != "none" || s.Key != ""):
			t.Errorf("metadata step %q: cache %q with key %q, want none and no key (not a hit on a first build)", s.Instruction, s.Cache, s.Key)
		}
	}
	if s := m.step(t, "build", "RUN"); s.Stage != "build" || s.Instruction != "RUN echo $V > /v" {
		t.Errorf("stage/instruction of the RUN: %+v", s)
	}
}

// checkStepSchema checks that every step has exactly the fields issue #4
// lists (reason, key and layer may be omitted when empty) with their
// types, plus name (the step as progress shows it).
func checkStepSchema(t *testing.T, m *buildMeta) {
	t.Helper()
	allowed := map[string]bool{"stage": true, "line": true, "instruction": true, "name": true, "cache": true,
		"reason": false, "key": false, "duration_ms": true, "layer": false, "size": false, "saved_ms": false}
	for i, s := range m.rawSteps {
		for k := range s {
			if _, ok := allowed[k]; !ok {
				t.Errorf("step %d: unexpected field %q", i, k)
			}
		}
		for k, required := range allowed {
			if _, ok := s[k]; required && !ok {
				t.Errorf("step %d lacks %q: %s", i, k, m.raw)
			}
		}
		var n float64
		if err := json.Unmarshal(s["line"], &n); err != nil {
			t.Errorf("step %d: line is not a number: %s", i, s["line"])
		}
		if err := json.Unmarshal(s["duration_ms"], &n); err != nil || n < 0 {
			t.Errorf("step %d: duration_ms %s", i, s["duration_ms"])
		}
		var c string
		if err := json.Unmarshal(s["cache"], &c); err != nil || (c != "hit" && c != "miss" && c != "none") {
			t.Errorf("step %d: cache %s, want \"hit\", \"miss\" or \"none\"", i, s["cache"])
		}
	}
}

func TestE2EHistoryCacheColumn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := e.context("FROM busybox:fixture\nARG V=1\nCOPY a.txt /a\nCOPY --link b.txt /b\nRUN echo $V > /v\n", map[string]string{"a.txt": "a\n", "b.txt": "b\n"})
	e.build(dir, "-t", "h:1")
	e.write(dir, "a.txt", "a2\n")
	e.build(dir, "-t", "h:1")
	out, _ := e.mustRun("history", "h:1")
	wantRow(t, out, "COPY b.txt", "hit: --link layer of an earlier build, over other steps")
	m := e.build(dir, "-t", "h:1", "--build-arg", "V=2")

	out, _ = e.mustRun("history", "h:1")
	lines := strings.Split(out, "\n")
	if !strings.Contains(lines[0], "CACHE") {
		t.Fatalf("history has no CACHE column:\n%s", out)
	}
	wantRow(t, out, "RUN", "miss: build arg V changed (1 → 2)")
	wantRow(t, out, "COPY a.txt", "hit")

	out, _ = e.mustRun("history", "--format", "json", "h:1")
	var rows []struct {
		CreatedBy string `json:"created_by"`
		Cache     string `json:"cache"`
		Reason    string `json:"reason"`
		Key       string `json:"key"`
		Inputs    *struct {
			Op     string `json:"op"`
			Fields []struct {
				Name, Value string
			} `json:"fields"`
			Files []struct {
				Path, Digest string
			} `json:"files"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("history json: %v\n%s", err, out)
	}
	var sawRun, sawCopy bool
	for _, r := range rows {
		switch {
		case strings.HasPrefix(r.CreatedBy, "RUN"):
			sawRun = true
			if r.Key != m.step(t, "", "RUN").Key || r.Cache != "miss" || r.Inputs == nil {
				t.Errorf("history json RUN row: %+v", r)
			} else if !hasField(r.Inputs.Fields, "arg.V", "2") {
				t.Errorf("history json RUN inputs lack arg.V=2: %+v", r.Inputs)
			}
		case strings.HasPrefix(r.CreatedBy, "COPY a.txt"):
			sawCopy = true
			if r.Cache != "hit" || r.Inputs == nil || len(r.Inputs.Files) != 1 || !strings.HasPrefix(r.Inputs.Files[0].Digest, "sha256:") {
				t.Errorf("history json COPY row: %+v", r)
			}
		}
	}
	if !sawRun || !sawCopy {
		t.Errorf("history json lacks the RUN or COPY row:\n%s", out)
	}
}

func hasField(fields []struct{ Name, Value string }, name, value string) bool {
	for _, f := range fields {
		if f.Name == name && f.Value == value {
			return true
		}
	}
	return false
}

// wantRow fails unless a history table row contains both substrings.
func wantRow(t *testing.T, table, by, cache string) {
	t.Helper()
	for _, l := range strings.Split(table, "\n") {
		if strings.Contains(l, by) && strings.Contains(l, cache) {
			return
		}
	}
	t.Errorf("history has no row with %q and %q:\n%s", by, cache, table)
}

// The store tests below damage the store the way a disk or a person can,
// and check the damage is detected: the step is rebuilt, or the build fails
// with an error naming what is damaged, and nothing damaged is exported.

const storeDockerfile = "FROM busybox:fixture\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n"

func TestE2EStoreCorruptKeyRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := e.context(storeDockerfile, map[string]string{"a.txt": "a\n"})
	first := e.build(dir)
	for _, garbage := range []string{"{not json", `{"key":"sha256:` + strings.Repeat("0", 64) + `"}`} {
		for _, s := range first.Steps[1:] {
			p := filepath.Join(e.root, "keys", strings.TrimPrefix(s.Key, "sha256:")+".json")
			if err := os.WriteFile(p, []byte(garbage), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		m := e.build(dir, "-o", "type=local,dest="+filepath.Join(e.dir, "out"))
		m.wantCache(t, "", "COPY", "miss", "cache entry missing")
		wantFileContent(t, filepath.Join(e.dir, "out", "b.txt"), "a\n")
		e.build(dir).wantAllHits(t)
	}
}

func TestE2EStoreMissingLayerDir(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := e.context(storeDockerfile, map[string]string{"a.txt": "a\n"})
	first := e.build(dir)
	layer := first.step(t, "", "RUN").Layer
	if err := os.RemoveAll(filepath.Join(e.root, "snapshots", strings.TrimPrefix(layer, "sha256:"))); err != nil {
		t.Fatal(err)
	}
	m := e.build(dir, "-o", "type=local,dest="+filepath.Join(e.dir, "out"))
	m.wantCache(t, "", "COPY", "hit", "")
	m.wantCache(t, "", "RUN", "miss", "cache entry missing")
	wantFileContent(t, filepath.Join(e.dir, "out", "b.txt"), "a\n")
	if !m.step(t, "", "RUN").hasLayerDir(e.root) {
		t.Errorf("the rebuilt RUN step has no layer directory")
	}
}

func TestE2EStoreModifiedLayerDir(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := e.context(storeDockerfile, map[string]string{"a.txt": "a\n"})
	first := e.build(dir)
	layer := strings.TrimPrefix(first.step(t, "", "RUN").Layer, "sha256:")
	e.write(filepath.Join(e.root, "snapshots", layer, "fs"), "b.txt", "tampered\n")
	dest := filepath.Join(e.dir, "image.tar")
	_, errOut, err := e.run("build", "--progress", "plain", "-o", "type=docker,dest="+dest, dir)
	if err == nil {
		t.Fatalf("export of a modified layer succeeded:\n%s", errOut)
	}
	if !strings.Contains(errOut, layer) {
		t.Errorf("error does not name the modified layer %s:\n%s", layer, errOut)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Errorf("a damaged image was exported to %s (stat: %v)", dest, err)
	}
}

func TestE2EStoreCorruptBlob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	saved := filepath.Join(e.dir, "base.tar")
	e.mustRun("save", "-o", saved, "busybox:fixture")
	// A second root holding the base image as loaded blobs.
	e2 := &e2eEnv{t: t, root: filepath.Join(e.dir, "root2"), dir: e.dir}
	e2.mustRun("load", "-i", saved)
	blob := largestBlob(t, e2.root)
	flipByte(t, blob)
	dir := e2.context("FROM busybox:fixture\nCOPY a.txt /a.txt\n", map[string]string{"a.txt": "a\n"})
	dest := filepath.Join(e.dir, "image.tar")
	_, errOut, err := e2.run("build", "--progress", "plain", "-o", "type=docker,dest="+dest, dir)
	if err == nil {
		t.Fatalf("export with a corrupt base layer blob succeeded:\n%s", errOut)
	}
	if !strings.Contains(errOut, filepath.Base(blob)) {
		t.Errorf("error does not name the corrupt blob %s:\n%s", filepath.Base(blob), errOut)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Errorf("an image with a corrupt blob was exported to %s (stat: %v)", dest, err)
	}
	if _, err := os.Stat(blob); !os.IsNotExist(err) {
		t.Errorf("the corrupt blob %s was kept", blob)
	}

	// A corrupt manifest: the base image can't be resolved, and the error
	// names the blob.
	e.mustRun("tag", "busybox:fixture", "other:1")
	e.build(e.context("FROM other:1\n", nil))
	digest := resolveDigest(t, e, "other:1")
	flipByte(t, filepath.Join(e.root, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:")))
	_, errOut, err = e.run("build", "--progress", "plain", e.context("FROM other:1\nRUN true\n", nil))
	if err == nil || !strings.Contains(errOut, digest) {
		t.Errorf("build on a corrupt base manifest: err %v, want an error naming %s:\n%s", err, digest, errOut)
	}
}

// resolveDigest returns the manifest digest of a stored image.
func resolveDigest(t *testing.T, e *e2eEnv, ref string) string {
	t.Helper()
	out, _ := e.mustRun("inspect", ref)
	var v struct {
		Digest string `json:"digest"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		var list []struct {
			Digest string `json:"digest"`
		}
		if err2 := json.Unmarshal([]byte(out), &list); err2 != nil || len(list) == 0 {
			t.Fatalf("inspect %s: %v\n%s", ref, err, out)
		}
		v.Digest = list[0].Digest
	}
	return v.Digest
}

func largestBlob(t *testing.T, root string) string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var best string
	var size int64 = -1
	for _, d := range entries {
		fi, err := d.Info()
		if err == nil && fi.Size() > size {
			best, size = filepath.Join(root, "blobs", "sha256", d.Name()), fi.Size()
		}
	}
	return best
}

// flipByte changes one byte in the middle of a file, keeping its size.
func flipByte(t *testing.T, p string) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func wantFileContent(t *testing.T, p, want string) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("read output: %v", err)
		return
	}
	if string(got) != want {
		t.Errorf("%s = %q, want %q", p, got, want)
	}
}
