package executor

import (
	"fmt"
	"math"

	"github.com/builder-dev/builder/planner"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// stageLabels numbers a stage's steps as BuildKit's progress does: the FROM
// of an image counts as 1, then each RUN, COPY, ADD and WORKDIR; numbers
// are padded to the width of the total; the stage is named by its AS name,
// else "stage-N" unless the Dockerfile has only one stage. from is the
// FROM's label ("" when it is not counted: scratch or an earlier stage);
// steps[i] is step i's. stages is the number of stages in the Dockerfile.
func stageLabels(st *planner.Stage, stages int) (from string, steps []string) {
	total := 0
	if st.Base.Image != nil {
		total = 1
	}
	for _, step := range st.Steps {
		if countedStep(step.Cmd) {
			total++
		}
	}
	name := st.Name
	if name == "" && stages > 1 {
		name = fmt.Sprintf("stage-%d", st.Index)
	}
	prefix := "["
	if name != "" {
		prefix += name + " "
	}
	width := 1
	if total > 0 {
		width = 1 + int(math.Log10(float64(total)))
	}
	n := 0
	next := func() string {
		n++
		return fmt.Sprintf("%s%*d/%d]", prefix, width, n, total)
	}
	if st.Base.Image != nil {
		from = next()
	}
	steps = make([]string, len(st.Steps))
	for i, step := range st.Steps {
		switch {
		case countedStep(step.Cmd):
			steps[i] = next()
		case name != "":
			steps[i] = "[" + name + "]"
		}
	}
	return from, steps
}

func countedStep(c instructions.Command) bool {
	switch c.(type) {
	case *instructions.RunCommand, *instructions.CopyCommand, *instructions.AddCommand, *instructions.WorkdirCommand:
		return true
	}
	return false
}
