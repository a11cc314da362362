package executor

import (
	"context"
	"fmt"
	"strings"

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

// previous returns the previous finished build of this project, or nil.
func (b *build) previous(ctx context.Context) *cache.BuildRecord {
	b.prevOnce.Do(func() {
		if prev, err := b.e.opts.Cache.LatestBuild(ctx, b.e.opts.Project); err == nil {
			b.prev = prev
		}
	})
	return b.prev
}

// parentReason says why the chain of steps before the current one differs
// from the previous build's ("" when it does not).
func (b *build) parentReason(ctx context.Context, s *stageState) string {
	if !s.parentKnown {
		s.parentReason, s.parentKnown = b.explainFrom(ctx, s.from, s.fromInputs), true
	}
	return s.parentReason
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
func (b *build) explainFrom(ctx context.Context, st *planner.Stage, in *cache.Inputs) string {
	if b.previous(ctx) == nil {
		return "no earlier build"
	}
	prev := b.prevSteps(stageName(st))
	if len(prev) == 0 || prev[0].Inputs == nil {
		return "stage not in the earlier build"
	}
	r := cache.Explain(prev[0].Inputs, in)
	if r != "" && st.Base.Stage != nil {
		return fmt.Sprintf("base stage %s rebuilt", stageName(st.Base.Stage))
	}
	return r
}

// explain says why a step missed the cache, comparing it with the same step
// of the previous build of this project. A step that read another stage
// (content: the inputs of the files it read) is explained by those files
// when the earlier build read them too.
func (b *build) explain(ctx context.Context, sc *stepCtx, key cache.Key, in, content *cache.Inputs) string {
	switch {
	case b.e.opts.NoCache:
		return "--no-cache"
	case b.noCacheFor(sc.st):
		return "--no-cache-filter"
	case b.previous(ctx) == nil:
		return "no earlier build"
	}
	p, found := b.prevStep(sc)
	if found && content != nil && p.Key != key {
		if prev := b.contentInputs(ctx, p); prev != nil && prev.Op == content.Op {
			if r := cache.Explain(displayInputs(prev), displayInputs(content)); r != "" {
				return r
			}
		}
	}
	parent := b.parentReason(ctx, sc.s)
	switch {
	case !found && p == nil:
		if parent != "" {
			return parent
		}
		return "step not in the earlier build"
	case !found:
		return "instruction changed"
	case p.Key == key:
		return "cache entry missing (pruned, corrupt or from another store)"
	case p.Inputs.Op != in.Op:
		return "instruction changed"
	}
	if r := cache.Explain(displayInputs(p.Inputs), displayInputs(in)); r != "" {
		return r
	}
	if parent != "" {
		return parent
	}
	return fmt.Sprintf("key changed (%s)", short(key.String()))
}

// contentInputs returns the inputs of the files an earlier step read
// from another stage: those of its content key's record. Nil when it has
// none, or the record is gone.
func (b *build) contentInputs(ctx context.Context, p *cache.StepRecord) *cache.Inputs {
	if p.ContentKey.IsZero() {
		return nil
	}
	r, err := b.e.opts.Cache.Lookup(ctx, p.ContentKey)
	if err != nil {
		return nil
	}
	if r.InputsDigest == "" {
		return &r.Inputs
	}
	in, err := b.e.opts.Cache.ReadInputs(ctx, r.InputsDigest)
	if err != nil {
		return nil
	}
	return in
}

// prevStep finds the earlier build's record of the step: the one at the
// same position when its instruction text is the same, else the first
// with the same text (the step moved because others were added or
// removed). found is false when no earlier step has the same text; p is
// then the step that was at this position, if any.
func (b *build) prevStep(sc *stepCtx) (p *cache.StepRecord, found bool) {
	prev := b.prevSteps(sc.ev.Stage)
	i := sc.index + 1 // prev[0] is the FROM
	if i < len(prev) && prev[i].Inputs != nil {
		if prev[i].Instruction == sc.step.Text {
			return &prev[i], true
		}
		p = &prev[i]
	}
	for j := 1; j < len(prev); j++ {
		if prev[j].Inputs != nil && prev[j].Instruction == sc.step.Text {
			return &prev[j], true
		}
	}
	return p, false
}

// displayInputs returns in with the source index prefix ("0/") dropped
// from its file paths, so reasons name files as the user wrote them, when
// that leaves the paths unique.
func displayInputs(in *cache.Inputs) *cache.Inputs {
	if in == nil || len(in.Files) == 0 {
		return in
	}
	out := *in
	out.Files = make([]cache.FileInput, len(in.Files))
	seen := make(map[string]bool, len(in.Files))
	for i, f := range in.Files {
		_, rest, ok := strings.Cut(f.Path, "/")
		if !ok || seen[rest] || strings.Trim(f.Path[:len(f.Path)-len(rest)-1], "0123456789") != "" {
			return in
		}
		seen[rest] = true
		f.Path = rest
		out.Files[i] = f
	}
	return &out
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// ExplainStep says why a step's inputs differ between two builds, in the
// words of a cache miss ("a.txt content changed"); "" when they are equal.
func ExplainStep(prev, cur *cache.Inputs) string {
	if prev != nil && cur != nil && prev.Op != cur.Op {
		return "instruction changed"
	}
	return cache.Explain(displayInputs(prev), displayInputs(cur))
}
