package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// gcDockerfile has a build stage whose records no tag reaches (only its
// output file is copied into the image) and a final stage.
const gcDockerfile = `FROM busybox:fixture AS build
RUN seq 1 60000 > /blob && sha256sum /blob > /sum
FROM busybox:fixture
COPY --from=build /sum /sum
RUN cat /sum > /copy
`

// Plain prune keeps what recent builds made (entries unused for less than
// 48 hours), so the next build is still cached; an explicit until=0s takes
// every entry no tag needs.
func TestE2EPruneKeepsRecentCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := e.context(gcDockerfile, nil)
	e.build(dir, "-t", "gc:1")
	out, _ := e.mustRun("prune")
	if !strings.Contains(out, "Removed 0 cache entries") {
		t.Errorf("plain prune right after a build removed something:\n%s", out)
	}
	m := e.build(dir, "-t", "gc:1")
	for _, s := range m.Steps {
		if s.Key != "" && s.Cache != "hit" {
			t.Errorf("after plain prune, step %q: %s (%s), want a hit", s.Instruction, s.Cache, s.Reason)
		}
	}
	e.mustRun("prune", "--filter", "until=0s")
	m = e.build(dir, "-t", "gc:1")
	if s := findStep(t, m, "RUN cat"); s.Cache != "hit" {
		t.Errorf("after prune until=0s the tagged image's RUN was %s (%s); want a hit", s.Cache, s.Reason)
	}
	// The image's steps hit, so the build stage is not needed (BuildKit's
	// semantics): built on its own, its RUN runs again.
	if s := findStep(t, e.build(dir, "--target", "build"), "RUN seq"); s.Cache != "miss" {
		t.Errorf("after prune until=0s the build stage's RUN was %s; want a miss (no tag needs it)", s.Cache)
	}
}

// After a build, the automatic GC brings the store under its policy's cap
// without touching what tagged images need, says so, and du shows the
// policy and the last collection. A bad policy fails the build up front.
func TestE2EAutomaticGC(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := e.context(gcDockerfile, nil)
	tiny := []string{"BUILDER_GC_POLICY=max-used=1,reserved=0,min-free=0,interval=0s"}
	_, errOut := e.mustRunEnv(tiny, "build", "--progress", "plain", "-t", "gc:1", dir)
	if !strings.Contains(errOut, "automatic garbage collection: the store used") || !strings.Contains(errOut, "removed") {
		t.Errorf("build over the GC cap did not report a collection:\n%s", errOut)
	}
	out, _ := e.mustRunEnv(tiny, "du")
	for _, want := range []string{"Automatic GC ($BUILDER_GC_POLICY): max-used 1B", "Last automatic GC: ", "removed"} {
		if !strings.Contains(out, want) {
			t.Errorf("du does not show %q:\n%s", want, out)
		}
	}
	m := e.build(dir, "-t", "gc:1")
	if s := findStep(t, m, "RUN cat"); s.Cache != "hit" {
		t.Errorf("the GC removed the tagged image's RUN (%s: %s)", s.Cache, s.Reason)
	}
	if s := findStep(t, e.build(dir, "--target", "build"), "RUN seq"); s.Cache != "miss" {
		t.Errorf("the GC kept the build stage's RUN (%s); the cap allows nothing untagged", s.Cache)
	}
	out, _ = e.mustRun("images")
	if !strings.Contains(out, "busybox") || !strings.Contains(out, "gc") {
		t.Errorf("images after GC:\n%s", out)
	}

	cmd := exec.Command(builderBin, "--root", e.root, "build", dir)
	cmd.Env = append(os.Environ(), "BUILDER_GC_POLICY=max-used=lots")
	got, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(got), "$BUILDER_GC_POLICY") || !strings.Contains(string(got), "max-used") {
		t.Errorf("bad policy: %v\n%s\nwant a failure naming $BUILDER_GC_POLICY and max-used", err, got)
	}
}

func findStep(t *testing.T, m *buildMeta, prefix string) stepMeta {
	t.Helper()
	for _, s := range m.Steps {
		if strings.HasPrefix(s.Instruction, prefix) {
			return s
		}
	}
	t.Fatalf("no step %q in %+v", prefix, m.Steps)
	return stepMeta{}
}
