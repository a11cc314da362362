package main

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/builder-dev/builder/executor"
	"github.com/google/go-cmp/cmp"
)

// fakeTerm is a terminal screen that understands what ttyRenderer writes:
// text, newline, ESC[nA (cursor up), ESC[2K (erase line) and ESC[J (erase
// from the cursor to the end of the screen). Anything else fails the test.
type fakeTerm struct {
	t      *testing.T
	width  int
	screen []string
	row    int
	col    int
	writes int
}

var csi = regexp.MustCompile(`^\x1b\[(\d*)([A-Za-z])`)

func (f *fakeTerm) Write(b []byte) (int, error) {
	f.writes++
	s := string(b)
	for len(s) > 0 {
		if m := csi.FindStringSubmatch(s); m != nil {
			f.control(m[1], m[2])
			s = s[len(m[0]):]
			continue
		}
		r := []rune(s)[0]
		s = s[len(string(r)):]
		switch {
		case r == '\n':
			f.row, f.col = f.row+1, 0
		case r < 0x20 || r == 0x7f:
			f.t.Errorf("control character %q written to the terminal", r)
		default:
			f.put(r)
		}
	}
	return len(b), nil
}

func (f *fakeTerm) control(arg, cmd string) {
	n, _ := strconv.Atoi(arg)
	switch {
	case cmd == "A":
		f.row = max(0, f.row-max(n, 1))
	case cmd == "K" && arg == "2":
		f.grow()
		f.screen[f.row] = ""
	case cmd == "J" && arg == "":
		f.grow()
		f.screen[f.row] = string([]rune(f.screen[f.row])[:min(f.col, len([]rune(f.screen[f.row])))])
		f.screen = f.screen[:f.row+1]
	default:
		f.t.Errorf("unexpected escape sequence ESC[%s%s", arg, cmd)
	}
}

func (f *fakeTerm) grow() {
	for len(f.screen) <= f.row {
		f.screen = append(f.screen, "")
	}
}

func (f *fakeTerm) put(r rune) {
	f.grow()
	if f.col >= f.width {
		f.t.Errorf("line %d wraps past %d columns: %q", f.row, f.width, f.screen[f.row])
	}
	line := []rune(f.screen[f.row])
	for len(line) <= f.col {
		line = append(line, ' ')
	}
	line[f.col] = r
	f.screen[f.row], f.col = string(line), f.col+1
}

// lines is the screen without the empty line under the cursor.
func (f *fakeTerm) lines() []string {
	out := append([]string(nil), f.screen...)
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time            { return c.t }
func (c *fakeClock) advance(d time.Duration)   { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock                 { return &fakeClock{t: time.Unix(1700000000, 0)} }
func ev(step int, instr string) executor.Event { return evIn("stage-0", step, 3, instr) }

func evIn(stage string, step, total int, instr string) executor.Event {
	label := fmt.Sprintf("[%s %d/%d]", stage, step, total)
	return executor.Event{Kind: executor.StepStarted, Stage: stage, Step: step, Total: total, Label: label, Instruction: instr}
}

func done(e executor.Event) executor.Event { e.Kind = executor.StepDone; return e }

func TestTTYRendererUpdatesStepsInPlace(t *testing.T) {
	term := &fakeTerm{t: t, width: 60}
	clock := newFakeClock()
	r := newTTYRenderer(term, term.width, clock.now, 0)
	p := &progress{mode: "tty", ids: map[string]int{}, start: map[string]time.Time{}, tty: r, w: term}

	copyStep, runStep, cmdStep := ev(1, "COPY a /a"), ev(2, "RUN make"), ev(3, `CMD ["sh"]`)
	p.Event(copyStep)
	p.Event(done(copyStep))
	p.Event(runStep)
	out := p.Output(runStep)
	fmt.Fprint(out, "compiling 1\ncompiling 2\n")
	clock.advance(1500 * time.Millisecond)
	fmt.Fprint(out, "line 3\nline 4\nline 5\r\nprogress 10%\rprogress 100%\n\x1b[31mred\x1b[0m\t!")
	out.(interface{ Flush() }).Flush()
	p.Notice("a notice")
	want := []string{
		"#1 [stage-0 1/3] COPY a /a  CACHED",
		"=> a notice",
		"#2 [stage-0 2/3] RUN make  1.5s",
		"  > line 4",
		"  > line 5",
		"  > progress 100%",
		"  > [31mred[0m !",
	}
	if diff := cmp.Diff(want, term.lines()); diff != "" {
		t.Errorf("while RUN runs (-want +got):\n%s", diff)
	}

	clock.advance(time.Second)
	d := done(runStep)
	d.Cache, d.Reason = "miss", "no earlier build"
	p.Event(d)
	p.Event(cmdStep)
	c := done(cmdStep)
	c.Metadata = true
	p.Event(c)
	p.Done("built sha256:abc in 2.5s")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	want = []string{
		"#1 [stage-0 1/3] COPY a /a  CACHED",
		"=> a notice",
		"#2 [stage-0 2/3] RUN make  DONE 2.5s (cache miss: no earli…",
		"#3 [stage-0 3/3] CMD [\"sh\"]  DONE 0.0s",
		"=> built sha256:abc in 2.5s",
	}
	if diff := cmp.Diff(want, term.lines()); diff != "" {
		t.Errorf("after the build (-want +got):\n%s", diff)
	}
}

func TestTTYRendererParallelStagesAndError(t *testing.T) {
	term := &fakeTerm{t: t, width: 80}
	clock := newFakeClock()
	r := newTTYRenderer(term, term.width, clock.now, 0)
	a, b := evIn("a", 1, 1, "RUN sleep 1"), evIn("b", 1, 1, "RUN false")
	r.Event(a, 1)
	r.Event(b, 2)
	fmt.Fprintln(r.Output(b, 2), "about to fail")
	clock.advance(time.Second)
	failed := done(b)
	failed.Err = &executor.StepError{Stage: "b", Line: 4, Instruction: "RUN false", Err: errors.New("exit code 1")}
	r.Event(failed, 2)
	// a still runs: b's result stays in the live region below it.
	want := []string{
		"#1 [a 1/1] RUN sleep 1  1.0s",
		"#2 [b 1/1] RUN false  ERROR",
		"  > about to fail",
		"  ERROR: exit code 1",
	}
	if diff := cmp.Diff(want, term.lines()); diff != "" {
		t.Errorf("one stage failed, one runs (-want +got):\n%s", diff)
	}
	// An interrupted build: Close marks the running step canceled.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	want[0] = "#1 [a 1/1] RUN sleep 1  CANCELED"
	if diff := cmp.Diff(want, term.lines()); diff != "" {
		t.Errorf("after Close (-want +got):\n%s", diff)
	}
}

// TestTTYRendererRefreshes: with a refresh interval the timer of a
// running step advances without events.
func TestTTYRendererRefreshes(t *testing.T) {
	var buf safeBuffer
	clock := &lockedClock{c: newFakeClock()}
	r := newTTYRenderer(&buf, 80, clock.now, 5*time.Millisecond)
	r.Event(ev(1, "RUN sleep 9"), 1)
	clock.advance(3 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), "RUN sleep 9  3.0s") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "RUN sleep 9  3.0s") {
		t.Errorf("timer not refreshed:\n%q", buf.String())
	}
}

// TestProgressAutoPicksPlainWithoutTerminal: auto on a pipe or buffer
// renders exactly the plain output.
func TestProgressAutoPicksPlainWithoutTerminal(t *testing.T) {
	var auto, plain bytes.Buffer
	pa, err := newProgress("auto", &auto)
	if err != nil {
		t.Fatal(err)
	}
	pp, _ := newProgress("plain", &plain)
	for _, p := range []*progress{pa, pp} {
		s := ev(1, "RUN x")
		p.Event(s)
		fmt.Fprintln(p.Output(s), "out")
		d := done(s)
		d.Cache, d.Reason = "miss", "why"
		p.Event(d)
		p.Close()
	}
	if pa.mode != "plain" || pa.tty != nil {
		t.Errorf("auto without a terminal chose %q", pa.mode)
	}
	got := regexp.MustCompile(`\d+\.\d+`).ReplaceAllString(auto.String(), "T")
	want := regexp.MustCompile(`\d+\.\d+`).ReplaceAllString(plain.String(), "T")
	if got != want || !strings.Contains(got, "#1 [stage-0 1/3] RUN x\n#1 T out\n#1 DONE Ts (cache miss: why)\n") {
		t.Errorf("auto output %q, plain %q", got, want)
	}
}

type safeBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type lockedClock struct {
	mu sync.Mutex
	c  *fakeClock
}

func (l *lockedClock) now() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c.now()
}

func (l *lockedClock) advance(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.c.advance(d)
}

// TestProgressSourceChanged: a step that failed because a source changed
// during the build (the CLI builds again) is marked CHANGED, not ERROR, in
// the plain and the tty renderers; other failures stay ERROR.
func TestProgressSourceChanged(t *testing.T) {
	changed := &executor.StepError{Stage: "b", Line: 3, Instruction: "COPY f /f",
		Err: fmt.Errorf("copy to /f: /ctx/f changed during the build: %w", executor.ErrSourceChanged)}
	failed := &executor.StepError{Stage: "b", Line: 4, Instruction: "RUN false", Err: errors.New("exit code 1")}

	var plain bytes.Buffer
	pp, err := newProgress("plain", &plain)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range []error{changed, failed} {
		s := ev(i+1, "STEP")
		pp.Event(s)
		d := done(s)
		d.Err = e
		pp.Event(d)
	}
	pp.Close()
	for _, want := range []string{
		"#1 CHANGED: copy to /f: /ctx/f changed during the build: " + executor.ErrSourceChanged.Error() + "\n",
		"#2 ERROR: exit code 1\n",
	} {
		if !strings.Contains(plain.String(), want) {
			t.Errorf("plain output lacks %q:\n%s", want, plain.String())
		}
	}

	term := &fakeTerm{t: t, width: 200}
	r := newTTYRenderer(term, term.width, newFakeClock().now, 0)
	s := evIn("b", 1, 1, "COPY f /f")
	r.Event(s, 1)
	d := done(s)
	d.Err = changed
	r.Event(d, 1)
	want := []string{
		"#1 [b 1/1] COPY f /f  CHANGED",
		"  CHANGED: copy to /f: /ctx/f changed during the build: " + executor.ErrSourceChanged.Error(),
	}
	if diff := cmp.Diff(want, term.lines()); diff != "" {
		t.Errorf("tty (-want +got):\n%s", diff)
	}
}
