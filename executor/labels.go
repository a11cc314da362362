package executor

import (
	"fmt"
	"math"
	"strings"

	"github.com/builder-dev/builder/planner"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// stageLabels numbers a stage's steps as BuildKit's progress does: the FROM
// of an image counts as 1, then each RUN, COPY, ADD and WORKDIR, and every
// inherited ONBUILD trigger; numbers are padded to the width of the total
// and go only to the steps that make a vertex (not to a WORKDIR that
// resolves to "/", which makes no directory, nor to a metadata trigger); the stage is named by its AS name,
// else "stage-N" unless the Dockerfile has only one stage. from is the
// FROM's label ("" when it is not counted: scratch or an earlier stage);
// steps[i] is step i's. stages is the number of stages in the Dockerfile.
// With multi (several platforms built) labels start with the stage's
// platform.
func stageLabels(st *planner.Stage, stages int, multi bool) (from string, steps []string) {
	total := 0
	if st.Base.Image != nil {
		total = 1
	}
	for _, step := range st.Steps {
		if countedStep(step.Cmd) || step.OnBuild {
			total++
		}
	}
	name := st.Name
	if name == "" && stages > 1 {
		name = fmt.Sprintf("stage-%d", st.Index)
	}
	prefix := "["
	if multi {
		prefix += planner.FormatPlatform(st.Platform) + " "
	}
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
	wd := baseWorkdir(st)
	for i, step := range st.Steps {
		rootWorkdir := false
		if c, ok := step.Cmd.(*instructions.WorkdirCommand); ok {
			wd = resolveWorkdir(wd, c.Path)
			rootWorkdir = wd == "/"
		}
		switch {
		case countedStep(step.Cmd) && !rootWorkdir:
			steps[i] = next()
		case name != "" || multi:
			steps[i] = strings.TrimSuffix(prefix, " ") + "]"
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

// baseWorkdir is the working directory a stage starts with: its base
// image's, or its base stage's after that stage's WORKDIRs.
func baseWorkdir(st *planner.Stage) string {
	switch {
	case st.Base.Stage != nil:
		wd := baseWorkdir(st.Base.Stage)
		for _, step := range st.Base.Stage.Steps {
			if c, ok := step.Cmd.(*instructions.WorkdirCommand); ok {
				wd = resolveWorkdir(wd, c.Path)
			}
		}
		return wd
	case st.Base.Image != nil && st.Base.Image.Config != nil:
		return st.Base.Image.Config.Config.WorkingDir
	}
	return ""
}
