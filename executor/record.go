package executor

import (
	"fmt"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/planner"
)

// fail remembers the first real error of the build, so that stages which
// stopped only because a dependency failed don't mask it.
func (b *build) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.firstErr == nil {
		b.firstErr = err
	}
}

// prevSteps returns the previous build's records of a stage: its FROM
// first, then one per instruction, in order.
func (b *build) prevSteps(stage string) []cache.StepRecord {
	if b.prev == nil {
		return nil
	}
	var out []cache.StepRecord
	for _, r := range b.prev.Steps {
		if r.Stage == stage {
			out = append(out, r)
		}
	}
	return out
}

// explainFrom compares a stage's FROM with the previous build's, returning
// the reason the whole chain differs ("" when it does not).
func (b *build) explainFrom(st *planner.Stage, in *cache.Inputs) string {
	if b.prev == nil {
		return "no earlier build"
	}
	prev := b.prevSteps(stageName(st))
	if len(prev) == 0 || prev[0].Inputs == nil {
		return "stage not in the earlier build"
	}
	if r := cache.Explain(prev[0].Inputs, in); r != "" {
		return r
	}
	return ""
}

// explain says why a step missed the cache, comparing it with the same step
// of the previous build of this project.
func (b *build) explain(sc *stepCtx, key cache.Key, in *cache.Inputs) string {
	switch {
	case b.e.opts.NoCache:
		return "--no-cache"
	case b.noCacheFor(sc.st):
		return "--no-cache-filter"
	case b.prev == nil:
		return "no earlier build"
	}
	prev := b.prevSteps(sc.ev.Stage)
	i := sc.index + 1 // prev[0] is the FROM
	if i >= len(prev) || prev[i].Inputs == nil {
		if sc.s.parentReason != "" {
			return sc.s.parentReason
		}
		return "step not in the earlier build"
	}
	p := prev[i]
	if p.Key == key {
		return "cache entry missing (pruned or from another store)"
	}
	if p.Inputs.Op != in.Op {
		return "instruction changed"
	}
	if r := cache.Explain(p.Inputs, in); r != "" {
		return r
	}
	if sc.s.parentReason != "" {
		return sc.s.parentReason
	}
	return fmt.Sprintf("key changed (%s)", short(key.String()))
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
