package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// remoteCacheDockerfile writes a random UUID in each RUN: a RUN that
// executes again writes another, so equal content means it did not run.
const remoteCacheDockerfile = `FROM %BASE% AS build
COPY a.txt /a.txt
RUN cat /proc/sys/kernel/random/uuid > /stamp-build && cat /a.txt >> /stamp-build
FROM %BASE%
COPY --from=build /stamp-build /stamp-build
COPY b.txt /b.txt
RUN cat /proc/sys/kernel/random/uuid > /stamp && rm /b.txt
ENV X=1
`

var remoteCacheFiles = map[string]string{"a.txt": "alpha\n", "b.txt": "beta\n"}

type buildMetadata struct {
	Digest string `json:"image.digest"`
	Steps  []struct {
		Stage       string `json:"stage"`
		Instruction string `json:"instruction"`
		Cache       string `json:"cache"`
		Reason      string `json:"reason"`
		Key         string `json:"key"`
	} `json:"steps"`
}

func readMetadata(t *testing.T, path string) buildMetadata {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m buildMetadata
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("metadata %s: %v", path, err)
	}
	return m
}

// buildWithCache builds the test Dockerfile FROM base in a new context
// directory (so its path differs per build) with extra flags, and returns
// the metadata and stderr.
func (e *e2eEnv) buildWithCache(base string, extra ...string) (buildMetadata, string) {
	e.t.Helper()
	ctx := e.context(strings.ReplaceAll(remoteCacheDockerfile, "%BASE%", base), remoteCacheFiles)
	meta := filepath.Join(e.dir, "meta-"+filepath.Base(ctx)+".json")
	args := append([]string{"build", "--progress", "plain", "--metadata-file", meta, "-t", "app:cached"}, extra...)
	_, errOut := e.mustRun(append(args, ctx)...)
	return readMetadata(e.t, meta), errOut
}

// stamps returns the RUN-written files of the image app:cached, read by
// exporting its filesystem.
func (e *e2eEnv) stamps() string {
	e.t.Helper()
	out, err := os.MkdirTemp(e.dir, "fs-")
	if err != nil {
		e.t.Fatal(err)
	}
	e.mustRun("build", "--progress", "quiet", "-o", "type=local,dest="+out, e.context("FROM app:cached\n", nil))
	var b strings.Builder
	for _, f := range []string{"stamp-build", "stamp"} {
		data, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			e.t.Fatal(err)
		}
		b.Write(data)
	}
	if _, err := os.Stat(filepath.Join(out, "b.txt")); !os.IsNotExist(err) {
		e.t.Errorf("b.txt, removed by the RUN, is in the image (stat: %v)", err)
	}
	return b.String()
}

// checkAllFromCache checks that every COPY and RUN step of the final
// stage of m hit the cache imported from src, and that the build stage,
// whose result the hits made unneeded, was not built: its steps are
// reported as cached, as BuildKit's, but nothing was imported for them.
func checkAllFromCache(t *testing.T, m buildMetadata, src string) {
	t.Helper()
	n := 0
	for _, s := range m.Steps {
		if !strings.HasPrefix(s.Instruction, "RUN") && !strings.HasPrefix(s.Instruction, "COPY") {
			continue
		}
		n++
		want := "from " + src
		if s.Stage == "build" {
			want = "result not needed"
		}
		if s.Cache != "hit" || s.Reason != want {
			t.Errorf("%s: cache %s, reason %q; want a hit, %s", s.Instruction, s.Cache, s.Reason, want)
		}
	}
	if n != 5 {
		t.Errorf("metadata lists %d COPY/RUN steps, want 5: %+v", n, m.Steps)
	}
}

// roundTrip builds with --cache-to in e, then in a fresh store with
// --cache-from, and checks that nothing ran again.
func roundTrip(t *testing.T, e, fresh *e2eEnv, base, cacheTo, cacheFrom, src string) {
	t.Helper()
	first, errOut := e.buildWithCache(base, "--cache-to", cacheTo)
	if !strings.Contains(errOut, "exported cache") {
		t.Errorf("first build did not report the cache export:\n%s", errOut)
	}
	want := e.stamps()

	second, errOut := fresh.buildWithCache(base, "--cache-from", cacheFrom)
	checkAllFromCache(t, second, src)
	if !strings.Contains(errOut, "CACHED (from "+src+")") {
		t.Errorf("progress does not say CACHED (from %s):\n%s", src, errOut)
	}
	if second.Digest != first.Digest {
		t.Errorf("image digest %s from the imported cache, want %s", second.Digest, first.Digest)
	}
	if got := fresh.stamps(); got != want {
		t.Errorf("RUN output differs, so a RUN executed again:\n got %q\nwant %q", got, want)
	}
	// The imported records are local now: a third build hits locally.
	third, _ := fresh.buildWithCache(base)
	for _, s := range third.Steps {
		if s.Key != "" && s.Cache != "hit" {
			t.Errorf("rebuild after import: %s missed (%s)", s.Instruction, s.Reason)
		}
	}
}

func TestE2ERemoteCacheRegistry(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	base := reg + "/busybox:fixture"
	e.mustRun("push", "busybox:fixture", base)
	ref := reg + "/cache/app:buildcache"

	fresh := e.fresh("root-fresh")
	roundTrip(t, e, fresh, base, "type=registry,ref="+ref+",mode=max", "type=registry,ref="+ref, ref)

	// The fresh store exports the cache it imported (blobs kept, layers
	// not re-serialized) and a third store imports that.
	ref2 := reg + "/cache/app:again"
	fresh.buildWithCache(base, "--cache-to", "type=registry,ref="+ref2+",mode=max")
	third := e.fresh("root-third")
	m, _ := third.buildWithCache(base, "--cache-from", ref2)
	checkAllFromCache(t, m, ref2)
}

func TestE2ERemoteCacheLocalModeMin(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	base := reg + "/busybox:fixture"
	e.mustRun("push", "busybox:fixture", base)
	dir := filepath.Join(e.dir, "cache-dir")

	_, errOut := e.buildWithCache(base, "--cache-to", "type=local,dest="+dir)
	// The final stage's 3 steps, each under its input key and its key by
	// the files the COPY --from read.
	if !strings.Contains(errOut, "(mode=min, 6 records)") {
		t.Errorf("mode=min should export the final stage's 3 steps under 6 keys:\n%s", errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		t.Fatalf("no OCI layout written: %v", err)
	}
	want := e.stamps()
	// The build stage was not exported, but the COPY --from is keyed by
	// the build stage's key: it hits, and the build stage is not built
	// (its RUN would write another stamp), as in BuildKit.
	fresh := e.fresh("root-fresh")
	m, errOut := fresh.buildWithCache(base, "--cache-from", "type=local,src="+dir)
	if !strings.Contains(errOut, "importing cache "+dir+": 6 records") {
		t.Errorf("import did not report 6 records:\n%s", errOut)
	}
	checkAllFromCache(t, m, dir)
	if got := fresh.stamps(); got != want {
		t.Errorf("RUN output differs, so a RUN executed again:\n got %q\nwant %q", got, want)
	}

	// mode=max into a second name of the same layout: a fresh store
	// hits everywhere.
	roundTrip(t, e, e.fresh("root-fresh2"), base, "type=local,dest="+dir+",tag=max,mode=max", "type=local,src="+dir+",tag=max", dir)
}

func TestE2ERemoteCacheMissingAndBadFlags(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nRUN true\n", nil)
	_, errOut := e.mustRun("build", "--progress", "plain", "--cache-from", "type=local,src="+filepath.Join(e.dir, "none"), ctx)
	if !strings.Contains(errOut, "[warning] cache") {
		t.Errorf("a missing cache is not reported as a warning:\n%s", errOut)
	}
	for _, bad := range [][]string{
		{"--cache-to", "type=local,src=/x"},
		{"--cache-from", "type=local,dest=/x"},
		{"--cache-to", "type=registry,ref=r/x:y,mode=all"},
		{"--cache-from", "type=s3,ref=x"},
		{"--cache-to", "type=registry"},
	} {
		if _, errOut, err := e.run(append(append([]string{"build"}, bad...), ctx)...); err == nil || !strings.Contains(errOut, bad[0]) {
			t.Errorf("build %v: err %v, stderr %q; want an error naming %s", bad, err, errOut, bad[0])
		}
	}
}
