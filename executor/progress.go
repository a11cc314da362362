package executor

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"sort"
	"sync"
	"time"
)

// EventKind tells what happened to a step.
type EventKind int

const (
	// StepStarted is sent before a step's cache lookup.
	StepStarted EventKind = iota
	// StepDone is sent when a step finished, hit or miss, or failed.
	StepDone
)

// Event reports the progress of one step.
type Event struct {
	Kind        EventKind
	Stage       string // stage name, or its index when unnamed
	Step, Total int    // 1-based position in the stage
	// Label is BuildKit's prefix for the step: "[name i/n]" ("[i/n]" in an
	// unnamed stage), counting the FROM of an image and the RUN, COPY, ADD
	// and WORKDIR steps; "[name]" (or "") for the steps BuildKit does not
	// count, which only change the image config.
	Label       string
	Line        int
	Instruction string // the instruction as written (for errors)
	// Name is the step's text in progress as BuildKit names its vertex
	// (planner.Step.Name); empty for steps that make none.
	Name  string
	Cache string // "hit" or "miss" (StepDone)
	// Metadata is true for steps that only change the image config:
	// nothing to look up or run.
	Metadata bool
	Reason   string // why it missed (StepDone)
	Duration time.Duration
	Err      error
	// Platform is the target platform of the Run that sent the event, in
	// a multi-platform build ("" otherwise): the same step of two
	// platforms is two steps.
	Platform string
}

// Title is the step as progress shows it: its label and instruction.
func (ev Event) Title() string {
	text := ev.Name
	if text == "" {
		text = ev.Instruction
	}
	if ev.Label == "" {
		return text
	}
	return ev.Label + " " + text
}

// Progress receives step events and the output of RUN steps. Implementations
// must be safe for concurrent use: stages run in parallel.
type Progress interface {
	Event(Event)
	// Output returns where the RUN output of the step in ev goes.
	Output(ev Event) io.Writer
}

// stepOutput is where a step's output goes, asked of Progress when the
// step first writes: the keys pass prepares steps before progress shows
// them, and a step that never runs shows no output.
type stepOutput struct {
	p    Progress
	ev   Event
	once sync.Once
	w    io.Writer
}

func (b *build) stepOutput(sc *stepCtx) *stepOutput {
	return &stepOutput{p: b.e.opts.Progress, ev: sc.ev}
}

func (o *stepOutput) writer() io.Writer {
	o.once.Do(func() { o.w = o.p.Output(o.ev) })
	return o.w
}

func (o *stepOutput) Write(b []byte) (int, error) { return o.writer().Write(b) }

// Flush flushes the output's partial last line, if it has one.
func (o *stepOutput) Flush() {
	if f, ok := o.writer().(interface{ Flush() }); ok {
		f.Flush()
	}
}

func sortSteps(steps []orderedStep, stageOrder map[int]int) {
	sort.SliceStable(steps, func(i, j int) bool {
		a, b := stageOrder[steps[i].stage], stageOrder[steps[j].stage]
		if a != b {
			return a < b
		}
		return steps[i].stepIndex < steps[j].stepIndex
	})
}

func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// platformProgress marks the events of one platform's Run.
type platformProgress struct {
	Progress
	platform string
}

func (p platformProgress) Event(ev Event) {
	ev.Platform = p.platform
	p.Progress.Event(ev)
}

func (p platformProgress) Output(ev Event) io.Writer {
	ev.Platform = p.platform
	return p.Progress.Output(ev)
}
