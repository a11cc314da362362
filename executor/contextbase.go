package executor

import (
	"context"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/planner"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
)

// contextImage is the image a stage FROM a named directory context starts
// with, before the context's files: the empty image of the stage's
// platform — or, for a stage the directory replaced, no configuration at
// all (BuildKit gives a local context no image config, so it has no
// platform, environment or working directory).
func contextImage(st *planner.Stage) *stageState {
	if !st.Replaced {
		return &stageState{img: emptyImage(st.Platform)}
	}
	s := &stageState{}
	s.img = dockerspec.DockerOCIImage{}
	s.img.RootFS.Type = "layers"
	return s
}

// contextLayer adds a named directory context's files to the stage s
// starts with as one layer, as BuildKit loads a local context: its
// .dockerignore applied, every file owned by 0:0, modes and times kept.
// The layer is keyed by the files' content like a COPY from the context,
// and rec, the stage's FROM record, takes its key and cache result. Like
// BuildKit's, the layer has no history entry (finalImage adds BuildKit's
// entries for layers without one).
func (b *build) contextLayer(ctx context.Context, st *planner.Stage, s *stageState, rec *cache.StepRecord) error {
	nc := st.Base.Context
	ev := Event{Stage: stageName(st), Line: st.Line, Instruction: st.Text, Name: "[context " + nc.Name + "] load from client"}
	b.e.opts.Progress.Event(ev)
	start := time.Now()
	err := b.loadContext(ctx, st, s, rec, ev)
	ev.Kind, ev.Cache, ev.Reason, ev.Duration, ev.Err = StepDone, rec.Cache, rec.Reason, time.Since(start), err
	b.e.opts.Progress.Event(ev)
	rec.DurationMS = time.Since(start).Milliseconds()
	s.fromInputs = rec.Inputs
	return err
}

func (b *build) loadContext(ctx context.Context, st *planner.Stage, s *stageState, rec *cache.StepRecord, ev Event) error {
	dir, err := openNamedContext(st.Base.Context)
	if err != nil {
		return err
	}
	req := copyRequest{Sources: []string{"."}, Dest: "/", Line: st.Line, TempDir: b.e.opts.TempDir}
	b.readFrom(&req, dir, "")
	p, err := copyPrepare(ctx, req)
	if err != nil {
		return err
	}
	defer p.Close()
	in := cache.Inputs{Op: "CONTEXT", Fields: append(p.Fields(), cache.Field{Name: "context", Value: st.Base.Context.Name}), Files: p.Inputs()}
	sc := &stepCtx{st: st, s: s, step: &planner.Step{Line: st.Line, EndLine: st.Line, Text: st.Text}, index: -1, rec: rec, ev: ev}
	return b.keyed(ctx, sc, change{inputs: in, desc: ev.Name, noHistory: true, apply: p.Apply})
}
