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

// contextBase is the layer of a named directory context that a stage
// starts FROM: the step that adds it, and the key before it.
type contextBase struct {
	plan *stepPlan
	from cache.Key
}

// keyContext keys (the keys pass) the layer of the named directory
// context st starts from: the context's files as BuildKit loads a local
// context — its .dockerignore applied, every file owned by 0:0, modes and
// times kept — keyed by their content like a COPY from the context. The
// stage's steps are keyed on it.
func (b *build) keyContext(ctx context.Context, st *planner.Stage, s *stageState) error {
	nc := st.Base.Context
	dir, err := openNamedContext(nc)
	if err != nil {
		return err
	}
	req := copyRequest{Sources: []string{"."}, Dest: "/", Line: st.Line, TempDir: b.e.opts.TempDir}
	b.readFrom(&req, dir, "")
	p, err := copyPrepare(ctx, req)
	if err != nil {
		return err
	}
	in := cache.Inputs{Op: "CONTEXT", Fields: append(p.Fields(), cache.Field{Name: "context", Value: nc.Name}), Files: p.Inputs()}
	ch := change{inputs: in, desc: "local source for " + nc.Name, noHistory: true, apply: p.Apply, applyDirect: p.ApplyDirect, close: p.Close}
	sc := &stepCtx{st: st, s: s, step: &planner.Step{Line: st.Line, EndLine: st.Line, Text: st.Text}, index: -1}
	from := s.key
	if err := b.prepare(sc, ch); err != nil {
		return err
	}
	s.context = &contextBase{plan: sc.plan, from: from}
	s.ctKey = s.key
	return nil
}

func contextTitle(nc *planner.NamedContext) string {
	return "[context " + nc.Name + "] load from client"
}

// contextLayer adds (the build pass) the context layer keyContext keyed
// to the stage s starts with; rec, the stage's FROM record, takes its key
// and cache result. Like BuildKit's, the layer has no history entry
// (finalImage adds BuildKit's entries for layers without one).
func (b *build) contextLayer(ctx context.Context, st *planner.Stage, s *stageState, rec *cache.StepRecord) error {
	cb := s.context
	ev := Event{Stage: stageName(st), Line: st.Line, Instruction: st.Text, Name: contextTitle(st.Base.Context)}
	b.e.opts.Progress.Event(ev)
	start := time.Now()
	s.key, s.ctKey = cb.from, cb.from
	sc := &stepCtx{st: st, s: s, step: &planner.Step{Line: st.Line, EndLine: st.Line, Text: st.Text}, index: -1, rec: rec, ev: ev}
	err := b.resolve(ctx, sc, cb.plan)
	cb.plan.release()
	ev.Kind, ev.Cache, ev.Reason, ev.Duration, ev.Err = StepDone, rec.Cache, rec.Reason, time.Since(start), err
	b.e.opts.Progress.Event(ev)
	rec.DurationMS = time.Since(start).Milliseconds()
	s.fromInputs = rec.Inputs
	return err
}
