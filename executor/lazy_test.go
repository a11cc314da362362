package executor

import (
	"fmt"
	"strings"
	"testing"

	"github.com/builder-dev/builder/cache"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fromStage builds /b in a stage and copies it into the target, where a
// RUN follows.
const fromStage = `FROM scratch AS base
COPY --chown=%[1]d:%[2]d a.txt /a.txt
RUN echo b > /b

FROM scratch
COPY --from=base --chown=%[1]d:%[2]d /b /b
RUN echo c > /c
`

func diffIDs(t *testing.T, res *Result) string {
	t.Helper()
	cfg, err := res.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(cfg.RootFS.DiffIDs)
}

// A step reading another stage is keyed by that stage's key: a rebuild
// whose consumer hits never builds the source stage.
func TestRunConsumerHitSkipsSource(t *testing.T) {
	f := newFakeBuild(t)
	f.write("a.txt", "a")
	first, _ := f.mustRun(fromStage)
	if got := f.sandbox.commands(); len(got) != 2 {
		t.Fatalf("first build ran %v, want both RUNs", got)
	}
	views := f.sn.viewCount()
	second, rec := f.mustRun(fromStage)
	wantSteps(t, second,
		"COPY --chown=%[1]d:%[2]d a.txt /a.txt: hit",
		"RUN echo b > /b: hit",
		"COPY --from=base --chown=%[1]d:%[2]d /b /b: hit",
		"RUN echo c > /c: hit")
	if got := f.sandbox.commands(); len(got) != 2 {
		t.Errorf("a cached rebuild ran %v", got[2:])
	}
	if diffIDs(t, first) != diffIDs(t, second) {
		t.Errorf("cached rebuild has other layers")
	}
	// The base stage was never built nor read: its steps are reported
	// from their records.
	if n := f.sn.viewCount() - views; n != 0 {
		t.Errorf("cached rebuild read the base stage's files (%d views)", n)
	}
	for _, ev := range rec.events {
		if ev.Stage == "base" && ev.Kind == StepDone && !ev.Metadata && ev.Cache != "hit" {
			t.Errorf("base step %s: %s", ev.Instruction, ev.Cache)
		}
	}
}

// With an imported cache holding only the final image's steps (mode=min)
// on an empty store, the consumer hits by its input key: the base stage
// is not built (its RUN would give other content), not even looked for.
func TestRunImportedMinCacheSkipsSource(t *testing.T) {
	src := newFakeBuild(t)
	src.write("a.txt", "a")
	first, _ := src.mustRun(fromStage)
	recs, err := CacheRecords(t.Context(), src.cache, first, CacheMin)
	if err != nil {
		t.Fatal(err)
	}
	exported := newFakeCache(t)
	for _, r := range recs {
		if err := exported.Put(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	// Both steps of the target, each under its two keys: the RUN after
	// the COPY is on the COPY's content chain too.
	if len(recs) != 4 {
		t.Errorf("mode=min exported %d records, want 4", len(recs))
	}

	f := newFakeBuild(t)
	f.write("a.txt", "a")
	f.layers = src.layers
	f.sn = newFakeSnapshotter(t, src.layers)
	f.remote = fakeRemote{exported}
	res, _ := f.mustRun(fromStage)
	wantSteps(t, res,
		"COPY --chown=%[1]d:%[2]d a.txt /a.txt: hit (result not needed)",
		"RUN echo b > /b: hit (result not needed)",
		"COPY --from=base --chown=%[1]d:%[2]d /b /b: hit (from fake-remote)",
		"RUN echo c > /c: hit (from fake-remote)")
	if got := f.sandbox.commands(); len(got) != 0 {
		t.Errorf("ran %v", got)
	}
	if diffIDs(t, first) != diffIDs(t, res) {
		t.Errorf("image from the imported cache has other layers")
	}
	// mode=max of that build exports what it has: the unbuilt steps'
	// records are not in the store, and are left out.
	if _, err := CacheRecords(t.Context(), f.cache, res, CacheMax); err != nil {
		t.Errorf("mode=max export: %v", err)
	}
}

// A changed source stage misses the consumer's input key: the source is
// built, and when it gives the same files the consumer hits by content,
// and so does the step after it. The next build hits by input keys.
func TestRunSourceChangedSameContent(t *testing.T) {
	f := newFakeBuild(t)
	f.write("a.txt", "a")
	first, _ := f.mustRun(fromStage)
	f.write("a.txt", "changed")
	second, _ := f.mustRun(fromStage)
	wantSteps(t, second,
		"COPY --chown=%[1]d:%[2]d a.txt /a.txt: miss (a.txt content changed)",
		"RUN echo b > /b: miss (parent step rebuilt (line 2))",
		"COPY --from=base --chown=%[1]d:%[2]d /b /b: hit",
		"RUN echo c > /c: hit")
	if got := f.sandbox.commands(); strings.Join(got[2:], ";") != "echo b > /b" {
		t.Errorf("second build ran %v, want only the base's RUN", got[2:])
	}
	if diffIDs(t, first) != diffIDs(t, second) {
		t.Errorf("same content, other layers")
	}
	for _, s := range second.Record.Steps {
		if strings.HasPrefix(s.Instruction, "COPY --from") && (s.ContentKey.IsZero() || s.ContentKey == s.Key) {
			t.Errorf("COPY --from record: content key %s, input key %s", s.ContentKey, s.Key)
		}
	}

	// The content hit was stored under the new input keys: nothing runs.
	third, _ := f.mustRun(fromStage)
	for _, s := range steps(third) {
		if !strings.HasSuffix(s, ": hit") {
			t.Errorf("third build: %s", s)
		}
	}
	if n := len(f.sandbox.commands()); n != 3 {
		t.Errorf("third build ran %v", f.sandbox.commands()[3:])
	}
}

// A step after a consumer that hit by content, whose record is gone, says
// its chain changed because of the source.
func TestRunSourceChangedNextStepPruned(t *testing.T) {
	f := newFakeBuild(t)
	f.write("a.txt", "a")
	first, _ := f.mustRun(fromStage)
	f.layers.forget(first.Record.Steps[len(first.Record.Steps)-1].Layer)
	f.write("a.txt", "changed")
	res, _ := f.mustRun(fromStage)
	wantSteps(t, res,
		"COPY --chown=%[1]d:%[2]d a.txt /a.txt: miss (a.txt content changed)",
		"RUN echo b > /b: miss (parent step rebuilt (line 2))",
		"COPY --from=base --chown=%[1]d:%[2]d /b /b: hit",
		"RUN echo c > /c: miss (parent step's source changed (line 6))")
}

// A source stage that gives other files makes the consumer run; its miss
// names the files.
func TestRunSourceChangedOtherContent(t *testing.T) {
	f := newFakeBuild(t)
	f.write("a.txt", "a")
	f.mustRun(fromStage)
	res, _ := f.mustRun(strings.Replace(fromStage, "echo b", "echo B", 1))
	wantSteps(t, res,
		"COPY --chown=%[1]d:%[2]d a.txt /a.txt: hit",
		"RUN echo B > /b: miss (instruction changed)",
		"COPY --from=base --chown=%[1]d:%[2]d /b /b: miss (b content changed)",
		"RUN echo c > /c: miss (parent step rebuilt (line 6))")
}

// A RUN --mount from a stage is keyed by that stage's key, then by what
// it binds: the same two rules as COPY --from.
func TestRunMountFromStageKeys(t *testing.T) {
	const df = `FROM scratch AS base
COPY --chown=%[1]d:%[2]d a.txt /a.txt
RUN echo b > /out/b

FROM scratch
RUN --mount=from=base,source=/out,target=/m echo c > /c
`
	f := newFakeBuild(t)
	f.write("a.txt", "a")
	f.mustRun(df)
	again, _ := f.mustRun(df)
	wantSteps(t, again,
		"COPY --chown=%[1]d:%[2]d a.txt /a.txt: hit",
		"RUN echo b > /out/b: hit",
		"RUN --mount=from=base,source=/out,target=/m echo c > /c: hit")
	if n := len(f.sandbox.commands()); n != 2 {
		t.Errorf("cached rebuild ran %v", f.sandbox.commands()[2:])
	}
	f.write("a.txt", "changed")
	changed, _ := f.mustRun(df)
	wantSteps(t, changed,
		"COPY --chown=%[1]d:%[2]d a.txt /a.txt: miss (a.txt content changed)",
		"RUN echo b > /out/b: miss (parent step rebuilt (line 2))",
		"RUN --mount=from=base,source=/out,target=/m echo c > /c: hit")
}

// --no-cache-filter on a source stage rebuilds it even though its
// consumer's input key is cached: the consumer can only hit by content.
func TestRunNoCacheFilterSource(t *testing.T) {
	f := newFakeBuild(t)
	f.write("a.txt", "a")
	f.mustRun(fromStage)
	res, _ := f.mustRun(fromStage, func(o *Options) { o.NoCacheStages = []string{"base"} })
	wantSteps(t, res,
		"COPY --chown=%[1]d:%[2]d a.txt /a.txt: miss (--no-cache-filter)",
		"RUN echo b > /b: miss (--no-cache-filter)",
		"COPY --from=base --chown=%[1]d:%[2]d /b /b: hit",
		"RUN echo c > /c: hit")
	if got := f.sandbox.commands(); strings.Join(got[2:], ";") != "echo b > /b" {
		t.Errorf("ran %v, want the base's RUN again", got[2:])
	}
}

// A base image's layers are unpacked when a step first runs on them: a
// build whose consumer hits never unpacks the source stage's base image.
func TestRunUnneededImageNotUnpacked(t *testing.T) {
	layer, err := random.Layer(64, types.OCIUncompressedLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: "amd64",
		RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{mustDiffID(t, layer)}}}); err != nil {
		t.Fatal(err)
	}
	const df = `FROM base-image AS base
RUN echo b > /b

FROM scratch
COPY --from=base --chown=%[1]d:%[2]d /b /b
`
	f := newFakeBuild(t)
	f.addImage("base-image", img)
	f.mustRun(df)
	if n := f.layers.unpacks(); n != 1 {
		t.Fatalf("first build unpacked %d layers, want the base image's", n)
	}
	// As if pruned: a build that needed the base stage unpacks it again.
	f.layers.forget(mustDiffID(t, layer).String())
	res, _ := f.mustRun(df)
	if n := f.layers.unpacks(); n != 1 {
		t.Errorf("a cached rebuild unpacked the unneeded base image (%d unpacks)", n)
	}
	wantSteps(t, res, "RUN echo b > /b: hit", "COPY --from=base --chown=%[1]d:%[2]d /b /b: hit")
	if _, _, err := f.run(strings.Replace(df, "echo b", "echo B", 1)); err != nil {
		t.Fatal(err)
	}
	if n := f.layers.unpacks(); n != 2 {
		t.Errorf("a build running on the base image unpacked %d layers in all, want 2", n)
	}
}

func mustDiffID(t *testing.T, l v1.Layer) v1.Hash {
	t.Helper()
	d, err := l.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The input key of a COPY from another stage holds what the step is
// without the files it reads: the source's identity, not its content.
func TestCopyFromInputKey(t *testing.T) {
	req := copyRequest{Sources: []string{"/b", "c*"}, Dest: "out/", Workdir: "/w", Chmod: "0755"}
	in, err := copyInputs(req, "stage base@sha256:1")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range in.Fields {
		got[f.Name] = f.Value
	}
	want := map[string]string{"dest": "/w/out/", "flag.chmod": "0755", "flag.link": "false", "flag.keep-git-dir": "false",
		"from": "stage base@sha256:1", "source.0": "/b", "source.1": "c*"}
	if fmt.Sprint(got) != fmt.Sprint(want) || in.Op != "COPY" || len(in.Files) != 0 {
		t.Errorf("inputs %+v, want fields %v", in, want)
	}
	other, _ := copyInputs(req, "stage base@sha256:2")
	if cache.KeyOf(cache.Key{}, in) == cache.KeyOf(cache.Key{}, other) {
		t.Error("another source key, same input key")
	}
	if _, err := copyInputs(copyRequest{Sources: []string{"a"}, Dest: "/", Chmod: "bad"}, "scratch"); err == nil {
		t.Error("invalid --chmod accepted")
	}
}
