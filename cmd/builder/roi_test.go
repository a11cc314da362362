package main

import (
	"strings"
	"testing"

	"github.com/builder-dev/builder/cache"
)

func step(stage string, line int, instr, hit, reason string, savedMS int64) cache.StepRecord {
	in := &cache.Inputs{Op: strings.Fields(instr)[0]}
	return cache.StepRecord{Stage: stage, Line: line, Instruction: instr, Key: cache.KeyOf(cache.Key{}, *in), Inputs: in,
		Cache: hit, Reason: reason, SavedMS: savedMS}
}

func TestCacheReport(t *testing.T) {
	b := &cache.BuildRecord{
		Steps: []cache.StepRecord{
			step("s", 1, "FROM busybox", "hit", "", 0),
			{Stage: "s", Line: 2, Instruction: "ENV A=1", Cache: "hit"}, // config only: not counted
			step("s", 3, "COPY go.mod /src/", "hit", "", 1500),
			step("s", 4, "RUN go mod download", "hit", "from reg/c:1", 20000),
			step("s", 5, "COPY src/ /app", "miss", "src/main.go content changed", 0),
			step("s", 6, "RUN make", "miss", "parent step rebuilt (line 5)", 0),
			step("t", 7, "FROM busybox", "hit", "", 0),
			step("t", 8, "COPY x /x", "miss", "x content changed", 0),
			step("t", 9, "RUN old", "hit", "", 0), // a record without a run time
		},
		Caches: []cache.CacheUse{
			{Ref: "reg/c:1", Direction: "import", Records: 7, Steps: 1, Layers: 1, Bytes: 12_300_000, DurationMS: 1200},
			{Ref: "reg/down:1", Direction: "import", Warning: "is unreachable"},
			{Ref: "dir", Direction: "export", Records: 6, Layers: 2, LayersSkipped: 4, Bytes: 2000, DurationMS: 300},
		},
		Outputs: []cache.BuildOutput{{Type: "registry", Name: "reg/app:v1", LayersPushed: 2, LayersSkipped: 5}, {Type: "image"}},
	}
	got := cacheReport(b)
	want := []string{
		"cache: 3 of 6 steps reused, 3 run; 21.5s saved (+1 reused without a recorded run time); " +
			"cache-from reg/c:1: 1 step (1 layer) imported, 12.3MB in 1.2s; cache-from reg/down:1: is unreachable; " +
			"cache-to dir: 6 records, 2 layers written, 4 already there, 2kB in 0.3s; push reg/app:v1: 2 layers pushed, 5 skipped",
		"cache-from reg/c:1: 1 of 4 steps found; line 5 (COPY src/ /app) not in cache: src/main.go content changed; " +
			"line 8 (COPY x /x) not in cache: x content changed",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("cacheReport:\n got %q\nwant %q", got, want)
	}
}

func TestCoverageNotNeeded(t *testing.T) {
	b := &cache.BuildRecord{
		Steps:  []cache.StepRecord{step("s", 2, "RUN a", "hit", "", 10)},
		Caches: []cache.CacheUse{{Ref: "r", Direction: "import"}},
	}
	if got := coverage(b); len(got) != 1 || got[0] != "cache-from r: not needed, every step was in the local cache" {
		t.Errorf("coverage = %q", got)
	}
}

func TestRegistryPath(t *testing.T) {
	for _, c := range []struct{ path, repo, kind, last string }{
		{"/v2/cache/app/blobs/sha256:abc", "cache/app", "blobs", "sha256:abc"},
		{"/v2/cache/app/blobs/uploads/", "cache/app", "uploads", ""},
		{"/v2/a/blobs/uploads/5f2e-1", "a", "uploads", "5f2e-1"},
		{"/v2/library/busybox/manifests/latest", "library/busybox", "manifests", "latest"},
		{"/v2/", "", "", ""},
		{"/token", "", "", ""},
	} {
		repo, kind, last := registryPath(c.path)
		if repo != c.repo || kind != c.kind || last != c.last {
			t.Errorf("registryPath(%q) = %q, %q, %q; want %q, %q, %q", c.path, repo, kind, last, c.repo, c.kind, c.last)
		}
	}
}

func TestRegistryMeterLayers(t *testing.T) {
	m := newRegistryMeter()
	r := m.repo("app")
	r.manifests = append(r.manifests, []byte(`{"schemaVersion":2,"config":{"digest":"sha256:`+strings.Repeat("c", 64)+`"},"layers":[{"digest":"sha256:`+strings.Repeat("a", 64)+`"},{"digest":"sha256:`+strings.Repeat("b", 64)+`"}]}`))
	r.uploaded["sha256:"+strings.Repeat("b", 64)] = true
	if p, s := m.layers("app", 2); p != 1 || s != 1 {
		t.Errorf("layers = %d pushed, %d skipped; want 1, 1", p, s)
	}
	// No manifest put: the registry had it, so every layer was skipped.
	if p, s := m.layers("other", 3); p != 0 || s != 3 {
		t.Errorf("layers without a manifest put = %d, %d; want 0, 3", p, s)
	}
	// Only an index and an attestation manifest put (a re-push with
	// provenance): the registry had the image, every layer was skipped.
	a := m.repo("attested")
	a.manifests = append(a.manifests, []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:`+strings.Repeat("d", 64)+`"}]}`),
		[]byte(`{"schemaVersion":2,"artifactType":"application/vnd.docker.attestation.manifest.v1+json","config":{"digest":"sha256:`+strings.Repeat("e", 64)+`"},"layers":[{"digest":"sha256:`+strings.Repeat("f", 64)+`"}]}`))
	a.uploaded["sha256:"+strings.Repeat("f", 64)] = true
	if p, s := m.layers("attested", 4); p != 0 || s != 4 {
		t.Errorf("layers with only an index and attestations put = %d, %d; want 0, 4", p, s)
	}
}
