package main

import (
	"fmt"
	"strings"

	"github.com/builder-dev/builder/cache"
)

// roi is what the cache gave a build: the steps it reused and those it
// ran.
type roi struct {
	reused, run int
}

// roiOf counts the build's steps that have a cache key (RUN, COPY, ADD,
// WORKDIR: a stage's FROM and the config-only steps have nothing to reuse).
func roiOf(b *cache.BuildRecord) roi {
	var r roi
	for _, s := range b.Steps {
		if !keyedStep(s) {
			continue
		}
		switch s.Cache {
		case "hit":
			r.reused++
		case "miss":
			r.run++
		}
	}
	return r
}

// keyedStep reports whether s is a step the cache can reuse.
func keyedStep(s cache.StepRecord) bool {
	if s.Key.IsZero() {
		return false
	}
	if s.Inputs != nil {
		return s.Inputs.Op != "FROM"
	}
	return !strings.HasPrefix(strings.ToUpper(s.Instruction), "FROM ")
}

// lines says what the cache gave the build, for people.
func (r roi) lines(b *cache.BuildRecord) []string {
	return []string{fmt.Sprintf("%s reused, %d run", plural(r.reused, "step"), r.run)}
}
