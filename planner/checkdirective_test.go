package planner

import (
	"strings"
	"testing"
)

// TestCheckCommentAnyLine: a "# check=" comment before any instruction, not
// only on the first line, plans without a panic and keeps every step (it
// used to reach buildkit's nil linter through the planner's reparse).
func TestCheckCommentAnyLine(t *testing.T) {
	lines := []string{
		"ARG V=1",
		"FROM busybox AS base",
		"ENV A=$V",
		"RUN echo $A",
		"COPY a /a",
		"ONBUILD RUN true",
		"FROM base",
		"RUN --mount=type=cache,target=/c true",
		"CMD [\"sh\"]",
	}
	for _, comment := range []string{"# check=skip=all", "# check=error=true", "#check=skip=JSONArgsRecommended;error=true"} {
		for pos := 0; pos <= len(lines); pos++ {
			src := strings.Join(lines[:pos], "\n") + "\n" + comment + "\n" + strings.Join(lines[pos:], "\n") + "\n"
			p, _ := mustPlan(t, src, Options{})
			var steps int
			for _, st := range p.Stages {
				steps += len(st.Steps)
			}
			if steps != 7 {
				t.Errorf("%q at line %d: %d steps planned, want 7 (the ONBUILD trigger runs in the second stage)\n%s", comment, pos+1, steps, src)
			}
		}
	}
}
