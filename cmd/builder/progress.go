package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/builder-dev/builder/executor"
	"github.com/builder-dev/builder/parser"
)

// progress renders build events: "plain" (BuildKit-like numbered lines),
// "tty" (steps redrawn in place, see ttyRenderer; "auto" picks it when w
// is a terminal, else plain), "quiet" (errors only) or "rawjson" (buildx's:
// one BuildKit SolveStatus per line, progress_json.go).
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	mode  string
	ids   map[string]int
	next  int
	start map[string]time.Time
	tty   *ttyRenderer // set in tty mode
	// log, when set (Record), renders every event in plain mode too: the
	// build's log, whatever the display shows.
	log    *progress
	closed bool
}

// Record makes p also write the build's progress, as plain mode prints
// it, to w: the log `builder builds logs` replays. In plain mode that is
// exactly what p prints.
func (p *progress) Record(w io.Writer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == "plain" {
		p.w = io.MultiWriter(p.w, w)
		return
	}
	p.log = &progress{w: w, mode: "plain", ids: map[string]int{}, start: map[string]time.Time{}}
}

func newProgress(mode string, w io.Writer) (*progress, error) {
	switch mode {
	case "auto", "tty":
		width, isTerm := 0, false
		if f, ok := w.(interface{ Fd() uintptr }); ok {
			width, isTerm = terminalWidth(f.Fd())
		}
		if mode == "auto" && !isTerm {
			mode = "plain"
			break
		}
		mode = "tty"
		p := &progress{w: w, mode: mode, ids: map[string]int{}, start: map[string]time.Time{}}
		p.tty = newTTYRenderer(w, width, time.Now, 100*time.Millisecond)
		return p, nil
	case "plain", "quiet", "rawjson":
	default:
		return nil, fmt.Errorf("--progress %q: want auto, plain, tty, quiet or rawjson", mode)
	}
	return &progress{w: w, mode: mode, ids: map[string]int{}, start: map[string]time.Time{}}, nil
}

func stepKey(ev executor.Event) string {
	return fmt.Sprintf("%s/%s/%d", ev.Platform, ev.Stage, ev.Step)
}

func (p *progress) id(ev executor.Event) int {
	k := stepKey(ev)
	if n, ok := p.ids[k]; ok {
		return n
	}
	p.next++
	p.ids[k] = p.next
	return p.next
}

// Event implements executor.Progress.
func (p *progress) Event(ev executor.Event) {
	if p.log != nil {
		p.log.Event(ev)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.id(ev)
	switch p.mode {
	case "quiet":
		return
	case "rawjson":
		p.jsonEvent(ev)
		return
	case "tty":
		p.tty.Event(ev, n)
		return
	}
	if ev.Kind == executor.StepStarted {
		fmt.Fprintf(p.w, "#%d %s\n", n, ev.Title())
		return
	}
	switch {
	case ev.Err != nil:
		fmt.Fprintf(p.w, "#%d %s: %v\n", n, failState(ev.Err), rootCause(ev.Err))
	case ev.Metadata:
		fmt.Fprintf(p.w, "#%d DONE 0.0s\n", n)
	case ev.Cache == "miss":
		fmt.Fprintf(p.w, "#%d DONE %.1fs (cache miss: %s)\n", n, ev.Duration.Seconds(), ev.Reason)
	case ev.Reason != "":
		fmt.Fprintf(p.w, "#%d CACHED (%s)\n", n, ev.Reason)
	default:
		fmt.Fprintf(p.w, "#%d CACHED\n", n)
	}
}

// Output implements executor.Progress: RUN output, each line prefixed with
// the step's number and the time since the step started.
func (p *progress) Output(ev executor.Event) io.Writer {
	w := p.output(ev)
	if p.log != nil {
		return teeOutput{w, p.log.Output(ev)}
	}
	return w
}

func (p *progress) output(ev executor.Event) io.Writer {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == "quiet" {
		return io.Discard
	}
	if p.tty != nil {
		return p.tty.Output(ev, p.id(ev))
	}
	return &lineWriter{p: p, n: p.id(ev), key: stepKey(ev), start: time.Now()}
}

// teeOutput writes a step's output to the display and to the log.
type teeOutput struct{ display, log io.Writer }

func (t teeOutput) Write(b []byte) (int, error) {
	t.log.Write(b) // the log never fails the build
	return t.display.Write(b)
}

// Flush flushes both sides' last partial line.
func (t teeOutput) Flush() {
	for _, w := range []io.Writer{t.display, t.log} {
		if f, ok := w.(interface{ Flush() }); ok {
			f.Flush()
		}
	}
}

// Notice prints a message that is not about one step.
func (p *progress) Notice(msg string) {
	if p.log != nil {
		p.log.Notice(msg)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.mode {
	case "quiet":
	case "tty":
		p.tty.Notice(msg)
	case "rawjson":
		p.jsonNotice(msg)
	default:
		fmt.Fprintf(p.w, "=> %s\n", msg)
	}
}

// Warning prints a lint warning of the build, as buildkit reports one in
// its progress: " - Rule: message (line N)"; in rawjson mode with the
// rule's description, URL, level (1, a warning) and lines as buildkit's
// VertexWarning carries them (progress_json.go).
func (p *progress) Warning(w parser.Warning) {
	if p.mode != "rawjson" {
		p.Notice(" - " + w.Short())
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	line, end := parser.Span(w.Location)
	p.writeStatus(solveStatus{Warnings: []vertexWarn{{
		Level: 1, Short: []byte(w.Short()), Detail: [][]byte{[]byte(w.Description)}, URL: w.URL,
		Rule: w.Rule, Message: w.Message, Range: []sourceRange{{Start: position{Line: line}, End: position{Line: end}}},
	}}})
}

// Done prints the closing line.
func (p *progress) Done(msg string) { p.Notice(msg) }

// Close prints the final state of every step in tty mode; otherwise
// there is nothing to flush. Only the first call does anything.
func (p *progress) Close() error {
	p.mu.Lock()
	closed := p.closed
	p.closed = true
	p.mu.Unlock()
	if p.tty != nil && !closed {
		return p.tty.Close()
	}
	return nil
}

type lineWriter struct {
	p     *progress
	n     int
	key   string // the step's stepKey
	start time.Time
	buf   []byte
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	return len(b), nil
}

func (w *lineWriter) emit(line []byte) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if w.p.mode == "rawjson" {
		w.p.jsonLog(w.key, line)
		return
	}
	fmt.Fprintf(w.p.w, "#%d %.3f %s\n", w.n, time.Since(w.start).Seconds(), line)
}

// failState is how a failed step's line starts: CHANGED when a source
// changed during the build (the build then runs again; its last failure
// is the build's ERROR), ERROR otherwise.
func failState(err error) string {
	if errors.Is(err, executor.ErrSourceChanged) {
		return "CHANGED"
	}
	return "ERROR"
}

// rootCause strips the location wrapper for the one-line step status; the
// full error is printed at the end.
func rootCause(err error) error {
	var se *executor.StepError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// Flush prints a last line that had no newline.
func (w *lineWriter) Flush() {
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = nil
	}
}
