package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Ports of BuildKit's Dockerfile frontend tests (v0.34.2,
// frontend/dockerfile/*_test.go) whose assertions the conformance suite
// cannot express: counts and fields of the image config, the size limit
// on a Dockerfile too large for a case, and the state of the store after
// builds. fixtures/conformance/PORTING.md points at each.

// imageConfig reads the config of a single-image docker-save tar.
func imageConfig(t *testing.T, p string) *v1.ConfigFile {
	t.Helper()
	img, err := tarball.ImageFromPath(p, nil)
	if err != nil {
		t.Fatalf("read image %s: %v", p, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("config of %s: %v", p, err)
	}
	return cf
}

// rawHistory reads the history entries of a single-image docker-save tar
// as JSON objects, to tell an absent field from a zero one.
func rawHistory(t *testing.T, p string) []map[string]json.RawMessage {
	t.Helper()
	img, err := tarball.ImageFromPath(p, nil)
	if err != nil {
		t.Fatalf("read image %s: %v", p, err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatalf("config of %s: %v", p, err)
	}
	var cf struct {
		History []map[string]json.RawMessage `json:"history"`
	}
	if err := json.Unmarshal(raw, &cf); err != nil {
		t.Fatalf("config of %s: %v", p, err)
	}
	return cf.History
}

// historyWant is one expected history entry.
type historyWant struct {
	createdBy  string // a substring of created_by
	emptyLayer bool
}

// checkHistoryEntries compares history from offset on with want: each
// entry's created_by, empty_layer, and a creation time.
func checkHistoryEntries(t *testing.T, h []v1.History, offset int, want []historyWant) {
	t.Helper()
	if len(h) < offset+len(want) {
		t.Fatalf("%d history entries, want at least %d", len(h), offset+len(want))
	}
	for i, w := range want {
		got := h[offset+i]
		if !strings.Contains(got.CreatedBy, w.createdBy) {
			t.Errorf("history[%d].created_by = %q, want it to contain %q", offset+i, got.CreatedBy, w.createdBy)
		}
		if got.EmptyLayer != w.emptyLayer {
			t.Errorf("history[%d] (%s): empty_layer = %v, want %v", offset+i, got.CreatedBy, got.EmptyLayer, w.emptyLayer)
		}
		if got.Created.IsZero() {
			t.Errorf("history[%d] (%s): no created time", offset+i, got.CreatedBy)
		}
	}
}

// TestE2EDockerfileTooLarge ports testDockerfileTooLarge
// (dockerfile_filesize_test.go): a Dockerfile past BuildKit's read limit
// (17 MiB of comment lines, each under the parser's line limit) fails
// with BuildKit's error, before anything is built.
func TestE2EDockerfileTooLarge(t *testing.T) {
	e := newEnv(t)
	line := "# " + strings.Repeat("x", 4096) + "\n"
	df := "FROM scratch\n" + strings.Repeat(line, (17<<20)/len(line))
	dir := e.context(df, nil)
	_, stderr, err := e.run("build", "--progress", "plain", dir)
	if err == nil {
		t.Fatal("a 17 MiB Dockerfile built, want BuildKit's size error")
	}
	const want = "failed to read dockerfile: Dockerfile exceeds maximum allowed size of 16777216 bytes"
	if !strings.Contains(stderr, want) {
		t.Errorf("error does not contain %q:\n%s", want, stderr)
	}
	// The same Dockerfile on stdin (docker build -f -).
	cmd := e.command(t.Context(), "--root", e.root, "build", "--progress", "plain", "-f", "-", dir)
	cmd.Stdin = strings.NewReader(df)
	var out bytes.Buffer
	cmd.Stderr = &out
	if err := cmd.Run(); err == nil || !strings.Contains(out.String(), want) {
		t.Errorf("-f -: %v, want an error containing %q:\n%s", err, want, out.String())
	}
}

// TestE2EDockerfileScratchConfig ports testDockerfileScratchConfig
// (dockerfile_image_test.go): FROM scratch with an ENV has OS,
// Architecture and WorkingDir set, no diff IDs, and exactly one history
// entry, the ENV's, with an empty layer; Env has foo=bar and a PATH.
func TestE2EDockerfileScratchConfig(t *testing.T) {
	e := newEnv(t)
	dir := e.context("\nFROM scratch\nENV foo=bar\n", nil)
	p := e.buildTar(dir, "scratch-config")
	cf := imageConfig(t, p)
	if cf.OS == "" || cf.Architecture == "" {
		t.Errorf("os %q, architecture %q: want both set", cf.OS, cf.Architecture)
	}
	if cf.Config.WorkingDir == "" {
		t.Error("WorkingDir is empty, want it set")
	}
	if cf.RootFS.Type != "layers" {
		t.Errorf("rootfs type %q, want layers", cf.RootFS.Type)
	}
	if len(cf.RootFS.DiffIDs) != 0 {
		t.Errorf("%d diff IDs, want none", len(cf.RootFS.DiffIDs))
	}
	if len(cf.History) != 1 {
		t.Fatalf("%d history entries, want 1: %+v", len(cf.History), cf.History)
	}
	if h := cf.History[0]; !strings.Contains(h.CreatedBy, "ENV foo=bar") || !h.EmptyLayer {
		t.Errorf("history[0] = %+v, want ENV foo=bar with an empty layer", h)
	}
	// No layer, so no time (BuildKit's exporter takes history times from
	// layers), not the zero time: "created" is absent.
	if c, ok := rawHistory(t, p)[0]["created"]; ok {
		t.Errorf("history[0] created %s, want none", c)
	}
	if !slices.Contains(cf.Config.Env, "foo=bar") {
		t.Errorf("Env %q lacks foo=bar", cf.Config.Env)
	}
	if !slices.ContainsFunc(cf.Config.Env, func(s string) bool { return strings.HasPrefix(s, "PATH=") }) {
		t.Errorf("Env %q has no PATH", cf.Config.Env)
	}
}

// TestE2EExportedHistory ports testExportedHistory
// (dockerfile_history_test.go): history is scoped to the final stage;
// on a busybox of one layer and two history entries (as upstream's), the
// image has 4 diff IDs and 8 history entries, the stage's six in order,
// each with a creation time.
func TestE2EExportedHistory(t *testing.T) {
	e := newEnv(t)
	base := imageConfig(t, e.buildTar(e.context("FROM busybox:fixture\n", nil), "base"))
	if len(base.RootFS.DiffIDs) != 1 || len(base.History) != 2 {
		t.Fatalf("busybox:fixture has %d diff IDs and %d history entries, want upstream's 1 and 2", len(base.RootFS.DiffIDs), len(base.History))
	}
	dir := e.context(`
FROM busybox:fixture AS base
ENV foo=bar
COPY foo /foo2
FROM busybox:fixture
LABEL lbl=val
COPY --from=base foo2 foo3
WORKDIR /
RUN echo bar > foo4
RUN ["ls"]
EXPOSE 2375 5000 1234/udp
`, map[string]string{"foo": "contents0"})
	cf := imageConfig(t, e.buildTar(dir, "history"))
	if cf.RootFS.Type != "layers" {
		t.Errorf("rootfs type %q, want layers", cf.RootFS.Type)
	}
	if len(cf.RootFS.DiffIDs) != 4 {
		t.Errorf("%d diff IDs, want 4", len(cf.RootFS.DiffIDs))
	}
	if len(cf.History) != 8 {
		t.Errorf("%d history entries, want 8", len(cf.History))
	}
	checkHistoryEntries(t, cf.History, 2, []historyWant{
		{"lbl=val", true},
		{"COPY foo2 foo3", false},
		{"WORKDIR /", true},
		{"echo bar > foo4", false},
		{"RUN ls", false},
		{"EXPOSE [1234/udp 2375/tcp 5000/tcp]", true},
	})
}

// TestE2EPullScratch ports testPullScratch (dockerfile_image_test.go): an
// image FROM scratch with only a LABEL, stored under a name, is the base
// of a second build, whose image has one diff ID (the COPY's) and both
// labels. Upstream's last part mounts that image into a raw LLB RUN,
// which has no Dockerfile equivalent.
func TestE2EPullScratch(t *testing.T) {
	e := newEnv(t)
	e.build(e.context("\nFROM scratch\nLABEL foo=bar\n", nil), "-t", "testpullscratch:latest")
	dir := e.context("\nFROM testpullscratch:latest\nLABEL bar=baz\nCOPY foo .\n", map[string]string{"foo": "foo-contents"})
	p := e.buildTar(dir, "pullscratch2", "-t", "testpullscratch2:latest")
	cf := imageConfig(t, p)
	if cf.RootFS.Type != "layers" {
		t.Errorf("rootfs type %q, want layers", cf.RootFS.Type)
	}
	if len(cf.RootFS.DiffIDs) != 1 {
		t.Errorf("%d diff IDs, want 1", len(cf.RootFS.DiffIDs))
	}
	for k, v := range map[string]string{"foo": "bar", "bar": "baz"} {
		if got, ok := cf.Config.Labels[k]; !ok || got != v {
			t.Errorf("label %s = %q (set: %v), want %q", k, got, ok, v)
		}
	}
	if got := treeContent(t, readImage(t, p).tree, "/foo"); got != "foo-contents" {
		t.Errorf("/foo = %q, want foo-contents", got)
	}
}

// storeEntries lists the entries of the store's cache areas (layers,
// blobs, cache records), relative to the root.
func storeEntries(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	for _, d := range []string{"snapshots", "blobs/sha256", "keys"} {
		ents, err := os.ReadDir(filepath.Join(root, d))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, en := range ents {
			out = append(out, d+"/"+en.Name())
		}
	}
	return out
}

// TestE2ENoSnapshotLeak ports testNoSnapshotLeak (dockerfile_core_test.go):
// building the same Dockerfile again adds no layer, blob or cache record
// (upstream: the daemon's disk usage lists as many records), and leaves
// no active snapshot, scratch directory or mount.
func TestE2ENoSnapshotLeak(t *testing.T) {
	e := newEnv(t)
	dir := e.context("\nFROM scratch\nCOPY foo /\n", map[string]string{"foo": "contents"})
	e.build(dir)
	before := storeEntries(t, e.root)
	m := e.build(dir)
	wantAllHits(t, m)
	if after := storeEntries(t, e.root); !slices.Equal(before, after) {
		t.Errorf("the repeated build changed the store:\nbefore %q\nafter  %q", before, after)
	}
	e.checkNoActive()
	checkMounts(t, e.dir)
	checkNoTempSnapshots(t, filepath.Join(e.root, "snapshots"))
}

// TestE2ECacheReleased ports testCacheReleased (dockerfile_cache_test.go):
// after two builds nothing of the cache is held (no active snapshot,
// scratch directory or mount), so prune --all removes every cache record
// the builds made (upstream: disk usage is empty after pruning
// everything; builder keeps the records of tagged images' layers, here
// the base image's). That failed and interrupted builds release
// everything too is TestE2ELeak's.
func TestE2ECacheReleased(t *testing.T) {
	e := newEnv(t)
	base := keyRecords(t, e.root)
	dir := e.context("\nFROM busybox:fixture\nRUN echo hi > /hi\n", nil)
	e.build(dir)
	e.build(dir)
	e.checkNoActive()
	checkMounts(t, e.dir)
	if got := keyRecords(t, e.root); len(got) <= len(base) {
		t.Fatalf("the builds added no cache record (%d before, %d after): nothing to release", len(base), len(got))
	}
	e.mustRun("prune", "--all")
	if got := keyRecords(t, e.root); !slices.Equal(got, base) {
		t.Errorf("prune --all kept cache records of the builds:\nbase  %q\nafter %q", base, got)
	}
}

// keyRecords lists the store's cache records.
func keyRecords(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	for _, en := range storeEntries(t, root) {
		if strings.HasPrefix(en, "keys/") {
			out = append(out, en)
		}
	}
	return out
}
