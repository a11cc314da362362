package executor

import (
	"path/filepath"
	"testing"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/planner"
)

// TestCacheHitHistoryShowsInstruction: two instructions written differently
// can have the same key (COPY --parents /a/b/c/. /out/ and COPY --parents
// ./a/b/c /out/ copy the same files to the same places); a hit on the
// other's record still shows this instruction in the history, as BuildKit,
// whose history comes from the Dockerfile (testCopyRelativeParents).
func TestCacheHitHistoryShowsInstruction(t *testing.T) {
	ctx := t.Context()
	c, err := cache.Open(filepath.Join(t.TempDir(), "cache"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in := cache.Inputs{Op: "COPY", Fields: []cache.Field{{Name: "dest", Value: "/out/"}}}
	key := cache.KeyOf(cache.Key{}, in)
	if err := c.Put(ctx, &cache.Record{Key: key, EmptyLayer: true, CreatedBy: "COPY --parents /a/b/c/. /out/ # buildkit"}); err != nil {
		t.Fatal(err)
	}
	b := &build{e: New(Options{Cache: c})}
	sc := &stepCtx{st: &planner.Stage{}, s: &stageState{}, step: &planner.Step{}, rec: &cache.StepRecord{}}
	const want = "COPY --parents ./a/b/c /out/ # buildkit"
	if err := b.resolve(ctx, sc, &stepPlan{key: key, ch: change{inputs: in, createdBy: want}}); err != nil {
		t.Fatal(err)
	}
	if sc.rec.Cache != "hit" {
		t.Fatalf("cache = %q, want hit", sc.rec.Cache)
	}
	if h := sc.s.img.History; len(h) != 1 || h[0].CreatedBy != want {
		t.Errorf("history = %+v, want one entry %q", h, want)
	}
}
