package executor

import (
	"path/filepath"
	"testing"

	"github.com/builder-dev/builder/cache"
	"github.com/google/go-cmp/cmp"
)

func TestCacheRecordsModes(t *testing.T) {
	ctx := t.Context()
	c, err := cache.Open(filepath.Join(t.TempDir(), "cache"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	step := func(op, stage string) cache.StepRecord {
		in := cache.Inputs{Op: op, Fields: []cache.Field{{Name: "stage", Value: stage}}}
		k := cache.KeyOf(cache.Key{}, in)
		if op != "FROM" {
			if err := c.Put(ctx, &cache.Record{Key: k, EmptyLayer: true, CreatedBy: op + " " + stage}); err != nil {
				t.Fatal(err)
			}
		}
		return cache.StepRecord{Stage: stage, Instruction: op, Key: k, Inputs: &in}
	}
	steps := []cache.StepRecord{
		step("FROM", "build"), step("RUN", "build"),
		step("FROM", "final"), step("COPY", "final"), {Stage: "final", Instruction: "ENV X=1"}, step("RUN", "final"),
	}
	// The final image's history: two base entries, then COPY, ENV, RUN.
	res := &Result{Record: &cache.BuildRecord{Steps: steps}, History: []int{-1, -1, 3, 4, 5}}
	for mode, want := range map[CacheMode][]string{
		CacheMin: {"COPY final", "RUN final"},
		CacheMax: {"RUN build", "COPY final", "RUN final"},
	} {
		recs, err := CacheRecords(ctx, c, res, mode)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, r.CreatedBy)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("mode %s (-want +got):\n%s", mode, diff)
		}
	}
	if _, err := CacheRecords(ctx, c, res, "all"); err == nil {
		t.Error("mode all accepted")
	}
}
