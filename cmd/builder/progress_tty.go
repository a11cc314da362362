package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/builder-dev/builder/executor"
	"golang.org/x/sys/unix"
)

// ttyTailLines is how many lines of a running step's output the TTY
// display shows under it; a failed step keeps twice as many.
const ttyTailLines = 4

// ttyRenderer draws the build on a terminal: one line per step, rewritten
// in place as its state goes from running (with a timer and the tail of
// its output) to DONE, CACHED or ERROR. Finished steps at the top of the
// display are printed once for good and leave the live region, so the
// region stays as small as the set of steps still running.
//
// It writes only cursor-up (ESC[nA), erase-line (ESC[2K) and
// erase-below (ESC[J) sequences, and cuts every line to the terminal
// width so that no line wraps and the cursor arithmetic holds. Safe for
// concurrent use; the zero value is not usable, call newTTYRenderer.
type ttyRenderer struct {
	mu      sync.Mutex
	w       io.Writer
	width   int
	now     func() time.Time
	steps   []*ttyStep
	byKey   map[string]*ttyStep
	flushed int      // steps[:flushed] are printed for good
	drawn   int      // lines of the live region on screen
	notices []string // messages to print above the live region
	dirty   bool
	stop    chan struct{}
	stopped chan struct{}
}

// ttyStep is the display state of one step.
type ttyStep struct {
	n          int
	title      string
	state      string // "", "DONE", "CACHED", or failState's "ERROR" or "CHANGED"
	detail     string // cache miss reason or error
	start, end time.Time
	tail       []string
}

// newTTYRenderer returns a renderer writing to w, a terminal width
// columns wide. With a refresh interval above zero it redraws on its own
// while steps run (timers, output tails) until Close.
func newTTYRenderer(w io.Writer, width int, now func() time.Time, refresh time.Duration) *ttyRenderer {
	if width < 20 {
		width = 80
	}
	r := &ttyRenderer{w: w, width: width, now: now, byKey: map[string]*ttyStep{}}
	if refresh > 0 {
		r.stop, r.stopped = make(chan struct{}), make(chan struct{})
		go r.refresh(refresh)
	}
	return r
}

func (r *ttyRenderer) refresh(every time.Duration) {
	defer close(r.stopped)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.mu.Lock()
			if r.dirty || r.running() {
				r.draw()
			}
			r.mu.Unlock()
		}
	}
}

func (r *ttyRenderer) running() bool {
	for _, s := range r.steps[r.flushed:] {
		if s.state == "" {
			return true
		}
	}
	return false
}

func (r *ttyRenderer) step(ev executor.Event, n int) *ttyStep {
	k := stepKey(ev)
	s, ok := r.byKey[k]
	if !ok {
		s = &ttyStep{n: n, title: ev.Title(), start: r.now()}
		r.byKey[k] = s
		r.steps = append(r.steps, s)
	}
	return s
}

// Event records a step's start or end and redraws.
func (r *ttyRenderer) Event(ev executor.Event, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.step(ev, n)
	if ev.Kind == executor.StepDone {
		s.end = r.now()
		switch {
		case ev.Err != nil:
			s.state, s.detail = failState(ev.Err), rootCause(ev.Err).Error()
		case ev.Metadata || ev.Cache == "miss":
			s.state, s.detail = "DONE", ev.Reason
			if ev.Reason != "" {
				s.detail = "cache miss: " + ev.Reason
			}
		default:
			s.state, s.detail = "CACHED", ev.Reason
		}
	}
	r.draw()
}

// Output returns the writer for a step's RUN output; its lines feed the
// step's tail, shown on the next redraw.
func (r *ttyRenderer) Output(ev executor.Event, n int) io.Writer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &ttyOutput{r: r, s: r.step(ev, n)}
}

// Notice prints msg above the steps.
func (r *ttyRenderer) Notice(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notices = append(r.notices, msg)
	r.draw()
}

// Close stops the refresh and prints every step's final line.
func (r *ttyRenderer) Close() error {
	if r.stop != nil {
		close(r.stop)
		<-r.stopped
		r.stop = nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.draw()
	for _, s := range r.steps[r.flushed:] {
		if s.state == "" {
			s.state, s.end = "CANCELED", r.now()
		}
	}
	r.draw()
	return nil
}

// draw rewrites the live region: pending notices, then finished steps at
// its top (printed for good), then the steps still to finish. Call with
// r.mu held.
func (r *ttyRenderer) draw() {
	var b bytes.Buffer
	prev := r.drawn
	if prev > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", prev)
	}
	for _, n := range r.notices {
		r.line(&b, "=> "+n)
	}
	r.notices = nil
	for r.flushed < len(r.steps) && r.steps[r.flushed].state != "" {
		for _, l := range r.steps[r.flushed].lines(r.now(), r.width) {
			r.line(&b, l)
		}
		r.flushed++
	}
	r.drawn = 0
	for _, s := range r.steps[r.flushed:] {
		for _, l := range s.lines(r.now(), r.width) {
			r.line(&b, l)
			r.drawn++
		}
	}
	r.dirty = false
	if b.Len() == 0 && prev == 0 {
		return // nothing on screen and nothing to show
	}
	b.WriteString("\x1b[J")
	r.w.Write(b.Bytes()) //nolint:errcheck // progress on a terminal is best effort
	r.dirty = false
}

// line writes one cleared screen line, cut to the width.
func (r *ttyRenderer) line(b *bytes.Buffer, s string) {
	b.WriteString("\x1b[2K")
	b.WriteString(truncate(s, r.width-1))
	b.WriteByte('\n')
}

// lines renders a step for a terminal width columns wide: its status
// line (the instruction cut so that the state always shows), then its
// output tail while it runs or after it failed.
func (s *ttyStep) lines(now time.Time, width int) []string {
	var state string
	switch s.state {
	case "":
		state = fmt.Sprintf("%.1fs", now.Sub(s.start).Seconds())
	case "DONE":
		state = fmt.Sprintf("DONE %.1fs", s.end.Sub(s.start).Seconds())
	default:
		state = s.state
	}
	failed := s.state == "ERROR" || s.state == "CHANGED"
	if s.detail != "" && !failed {
		state += " (" + s.detail + ")"
	}
	head := fmt.Sprintf("#%d ", s.n)
	room := width - 1 - utf8.RuneCountInString(head) - 2 - min(utf8.RuneCountInString(state), width/2)
	out := []string{head + truncate(s.title, max(room, 8)) + "  " + state}
	switch {
	case s.state == "":
		out = append(out, indent(last(s.tail, ttyTailLines))...)
	case failed:
		out = append(out, indent(last(s.tail, 2*ttyTailLines))...)
		out = append(out, "  "+s.state+": "+s.detail)
	}
	return out
}

func last(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

func indent(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = "  > " + l
	}
	return out
}

// truncate cuts s to at most n runes, marking a cut with "…".
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// ttyOutput splits a step's output into lines for its tail.
type ttyOutput struct {
	r   *ttyRenderer
	s   *ttyStep
	buf []byte
}

func (o *ttyOutput) Write(b []byte) (int, error) {
	o.r.mu.Lock()
	defer o.r.mu.Unlock()
	o.buf = append(o.buf, b...)
	for {
		i := bytes.IndexByte(o.buf, '\n')
		if i < 0 {
			break
		}
		o.add(o.buf[:i])
		o.buf = o.buf[i+1:]
	}
	return len(b), nil
}

// Flush adds a last line that had no newline.
func (o *ttyOutput) Flush() {
	o.r.mu.Lock()
	defer o.r.mu.Unlock()
	if len(o.buf) > 0 {
		o.add(o.buf)
		o.buf = nil
	}
}

// add keeps a line, as a terminal would show it after carriage returns,
// with other control characters dropped. Call with r.mu held.
func (o *ttyOutput) add(line []byte) {
	s := string(line)
	if i := strings.LastIndexByte(strings.TrimRight(s, "\r"), '\r'); i >= 0 {
		s = s[i+1:]
	}
	s = strings.Map(func(c rune) rune {
		if c == '\t' {
			return ' '
		}
		if unicode.IsControl(c) {
			return -1
		}
		return c
	}, s)
	o.s.tail = append(last(o.s.tail, 2*ttyTailLines-1), s)
	o.r.dirty = true
}

// terminalWidth returns the width of the terminal on fd, and false when
// fd is not a terminal.
func terminalWidth(fd uintptr) (int, bool) {
	ws, err := unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ)
	if err != nil {
		return 0, false
	}
	if _, err := unix.IoctlGetTermios(int(fd), unix.TCGETS); err != nil {
		return 0, false
	}
	return int(ws.Col), true
}
