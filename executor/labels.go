package executor

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/builder-dev/builder/planner"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/util/system"
)

// stageLabels numbers a stage's steps as BuildKit's progress does: the FROM
// of an image or a named context counts as 1 (numbered only for an image
// that is no named context: BuildKit loads a context without its own
// label), then each RUN, COPY, ADD and WORKDIR, and every inherited ONBUILD
// trigger; numbers are padded to the width of the total and go only to the
// steps that make a vertex (not to a WORKDIR that resolves to "/", which
// makes no directory, nor to a metadata trigger). With named (namesStages)
// the stage is named by its AS name, else "stage-N"; without it, not even
// by its AS name. from is the FROM's label ("" when it has none: scratch,
// an earlier stage, a named context); steps[i] is step i's. With multi
// (several platforms built) labels start with the stage's platform.
func stageLabels(st *planner.Stage, named, multi bool) (from string, steps []string) {
	total := 0
	if st.Base.Image != nil || st.FromContext {
		total = 1
	}
	for _, step := range st.Steps {
		if countedStep(step.Cmd) || step.OnBuild {
			total++
		}
	}
	name := ""
	switch {
	case named && st.Name != "":
		name = st.Name
	case named:
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
	if st.Base.Image != nil && !st.FromContext {
		from = next()
	}
	steps = make([]string, len(st.Steps))
	wd := baseWorkdir(st)
	for i, step := range st.Steps {
		rootWorkdir := false
		if c, ok := step.Cmd.(*instructions.WorkdirCommand); ok {
			wd, _ = resolveWorkdirFor(wd, c.Path, st.Platform.OS)
			rootWorkdir = system.ToSlash(wd, st.Platform.OS) == "/"
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

// namesStages reports whether step labels name their stage, as
// BuildKit's do when it dispatches more than one state: the Dockerfile
// has several stages, or a COPY --from or RUN --mount from= names no
// stage (an image or a named context is a state of its own).
func namesStages(plan *planner.Plan) bool {
	if plan.StageCount > 1 {
		return true
	}
	stages := map[string]bool{}
	for _, st := range plan.Stages {
		if st.Name != "" {
			stages[st.Name] = true
		}
	}
	isStage := func(from string) bool {
		_, err := strconv.Atoi(from)
		return err == nil || stages[strings.ToLower(from)]
	}
	for _, st := range plan.Stages {
		for _, step := range st.Steps {
			if step.OnBuild {
				continue // dispatched after BuildKit counts its states
			}
			if c, ok := step.Cmd.(*instructions.CopyCommand); ok && c.From != "" && !isStage(c.From) {
				return true
			}
			for from := range step.MountFrom {
				if !isStage(from) {
					return true
				}
			}
		}
	}
	return false
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
				wd, _ = resolveWorkdirFor(wd, c.Path, st.Base.Stage.Platform.OS)
			}
		}
		return wd
	case st.Base.Image != nil && st.Base.Image.Config != nil:
		wd, _ := baseImageWorkdir(st.Base.Image.Config.Config.WorkingDir, st.Platform.OS)
		return wd
	}
	return ""
}
