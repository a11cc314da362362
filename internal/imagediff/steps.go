package imagediff

import (
	"fmt"

	"github.com/builder-dev/builder/cache"
)

// StepChange compares a step of build B with the same step of build A
// (same stage, same instruction text: at the same place, else the first
// one with that text).
type StepChange struct {
	Stage       string `json:"stage"`
	LineA       int    `json:"lineA,omitempty"`
	LineB       int    `json:"lineB,omitempty"`
	Name        string `json:"name"` // as progress shows it (B's, or A's when removed)
	Instruction string `json:"instruction"`
	Status      string `json:"status"` // same, changed, added, removed
	// Reason says why the step's inputs differ, in the words of a cache
	// miss; a step whose own inputs are equal differs because an earlier
	// step of its stage did.
	Reason string `json:"reason,omitempty"`
	CacheA string `json:"cacheA,omitempty"`
	CacheB string `json:"cacheB,omitempty"`
	LayerA string `json:"layerA,omitempty"`
	LayerB string `json:"layerB,omitempty"`
}

// DiffSteps compares the steps that have a cache key of two builds.
// explain says why two inputs differ ("" when equal).
func DiffSteps(a, b []cache.StepRecord, explain func(a, b *cache.Inputs) string) []StepChange {
	sa, sb := byStage(a), byStage(b)
	var out []StepChange
	for _, stage := range stageOrder(b, a) {
		out = append(out, diffStage(stage, sa[stage], sb[stage], explain)...)
	}
	return out
}

func byStage(steps []cache.StepRecord) map[string][]cache.StepRecord {
	m := map[string][]cache.StepRecord{}
	for _, s := range steps {
		if !s.Key.IsZero() {
			m[s.Stage] = append(m[s.Stage], s)
		}
	}
	return m
}

// stageOrder lists the stages of b in order, then those only in a.
func stageOrder(b, a []cache.StepRecord) []string {
	var out []string
	seen := map[string]bool{}
	for _, steps := range [][]cache.StepRecord{b, a} {
		for _, s := range steps {
			if !seen[s.Stage] && !s.Key.IsZero() {
				seen[s.Stage] = true
				out = append(out, s.Stage)
			}
		}
	}
	return out
}

func diffStage(stage string, a, b []cache.StepRecord, explain func(a, b *cache.Inputs) string) []StepChange {
	used := make([]bool, len(a))
	match := func(k int, instr string) int {
		if k < len(a) && !used[k] && a[k].Instruction == instr {
			return k
		}
		for i := range a {
			if !used[i] && a[i].Instruction == instr {
				return i
			}
		}
		return -1
	}
	var out []StepChange
	changedLine := 0 // the B line of the last changed step of the stage
	for k, sb := range b {
		c := StepChange{Stage: stage, LineB: sb.Line, Name: nameOf(sb), Instruction: sb.Instruction, CacheB: sb.Cache, LayerB: sb.Layer}
		i := match(k, sb.Instruction)
		if i < 0 {
			c.Status = "added"
			out = append(out, c)
			changedLine = sb.Line
			continue
		}
		used[i] = true
		sa := a[i]
		c.LineA, c.CacheA, c.LayerA = sa.Line, sa.Cache, sa.Layer
		switch {
		case sa.Key == sb.Key:
			c.Status = "same"
		case sa.Inputs == nil || sb.Inputs == nil:
			c.Status, c.Reason = "changed", "inputs no longer recorded"
		default:
			c.Status = "changed"
			c.Reason = explain(sa.Inputs, sb.Inputs)
			if c.Reason == "" && changedLine > 0 {
				c.Reason = fmt.Sprintf("parent step changed (line %d)", changedLine)
			} else if c.Reason == "" {
				c.Reason = "its base changed"
			}
		}
		if c.Status == "changed" {
			changedLine = sb.Line
		}
		out = append(out, c)
	}
	for i, sa := range a {
		if !used[i] {
			out = append(out, StepChange{Stage: stage, LineA: sa.Line, Name: nameOf(sa), Instruction: sa.Instruction, Status: "removed",
				CacheA: sa.Cache, LayerA: sa.Layer})
		}
	}
	return out
}

func nameOf(s cache.StepRecord) string {
	if s.Name != "" {
		return s.Name
	}
	return s.Instruction
}
