package executor

import (
	"github.com/builder-dev/builder/internal/emulation"
	"github.com/builder-dev/builder/planner"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// hostCanRun says whether this machine runs programs of platform p.
func hostCanRun(p v1.Platform) error {
	h, err := emulation.Detect()
	if err != nil {
		return err
	}
	_, err = h.CanRun(p)
	return err
}

// checkPlatforms fails before any work when a stage that RUNs something
// is for a platform whose programs cannot run here (no emulator): the
// error names the stage's first RUN. Stages without RUN need nothing.
func (b *build) checkPlatforms() error {
	checked := map[string]error{}
	for _, st := range b.plan.Stages {
		run := firstRun(st)
		if run == nil {
			continue
		}
		key := planner.FormatPlatform(st.Platform)
		err, ok := checked[key]
		if !ok {
			err = b.e.opts.CanRun(st.Platform)
			checked[key] = err
		}
		if err != nil {
			return &StepError{Path: b.e.opts.DockerfilePath, Stage: stageName(st), Line: run.Line, Instruction: run.Text, Err: err}
		}
	}
	return nil
}

func firstRun(st *planner.Stage) *planner.Step {
	for _, s := range st.Steps {
		if _, ok := s.Cmd.(*instructions.RunCommand); ok {
			return s
		}
	}
	return nil
}
