package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/builder-dev/builder/parser"
	"github.com/builder-dev/builder/planner"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// checkArg is the build arg that replaces the "# check=" directive, as in
// buildkit's Dockerfile frontend.
const checkArg = "BUILDKIT_DOCKERFILE_CHECK"

// lintOptions is the lint configuration of a build: --build-arg
// BUILDKIT_DOCKERFILE_CHECK=... replaces the "# check=" directive.
func lintOptions(buildArgs map[string]*string) parser.LintOptions {
	return parser.LintOptions{Check: buildArgs[checkArg]}
}

// callFunc is buildx's --call: what a build does instead of building.
type callFunc struct {
	check        bool // run the lint rules and print their warnings
	outline      bool // print what the build needs (args, secrets, ssh)
	targets      bool // list the Dockerfile's stages
	json         bool // format=json: buildkit's lint result as JSON
	ignoreStatus bool // ignorestatus=true: warnings do not fail the command
}

// parseCall parses --call VALUE ("build", or "check" with
// ",format=json" and ",ignorestatus=BOOL"); --check is --call check.
func parseCall(s string, check bool) (callFunc, error) {
	var c callFunc
	if s == "" {
		s = "build"
	}
	if check {
		s = "check"
	}
	name := ""
	for _, field := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(field, "=")
		switch {
		case !ok && name == "":
			name = field
		case k == "format" && (v == "json" || v == "text"):
			c.json = v == "json"
		case k == "ignorestatus":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return c, fmt.Errorf("--call %s: invalid ignorestatus value %q", s, v)
			}
			c.ignoreStatus = b
		default:
			return c, fmt.Errorf("--call %s: invalid field %q", s, field)
		}
	}
	switch name {
	case "build":
		if c.json || c.ignoreStatus {
			return c, fmt.Errorf("--call %s: build takes no options", s)
		}
	case "check", "lint":
		c.check = true
	case "outline", "targets":
		if c.ignoreStatus {
			return c, fmt.Errorf("--call %s: ignorestatus is a check option", s)
		}
		c.outline, c.targets = name == "outline", name == "targets"
	default:
		return c, fmt.Errorf("--call %s: builder supports build, check, outline and targets", s)
	}
	return c, nil
}

// reportLint prints the lint warnings of a build in its progress, as
// buildkit reports them: a count, then " - Rule: message (line N)".
func reportLint(prog *progress, lint *parser.Lint) {
	ws := lint.Warnings()
	if len(ws) == 0 {
		return
	}
	prog.Notice(plural(len(ws), "warning") + " found:")
	for _, w := range ws {
		prog.Warning(w)
	}
}

// checkInput is what `build --check` works on: the Dockerfile, its parse
// (or parse error) and the build's options.
type checkInput struct {
	df      *parser.Dockerfile
	lint    *parser.Lint
	err     error  // the parse error, if any
	display string // the Dockerfile's name in messages
	source  []byte // its content
	dfFile  string // the file read ("-" for stdin)
}

// runCheck is `builder build --check` (--call check): buildkit's lint of
// the Dockerfile without building, as buildx prints it. It plans the
// build as buildkit's check converts it: every stage (only those the
// target needs with --target), base images resolved (local store, else
// pulled), the .dockerignore read, so that every rule applies. The
// warnings go to w; an error that stopped the check (the Dockerfile's, or
// error=true with warnings) is returned after them; without one, the
// command fails with status 1 when there are warnings, unless
// ignorestatus=true, as buildx's.
func runCheck(ctx context.Context, a *app, f *buildFlags, call callFunc, contextDir string, in checkInput) error {
	checkErr := in.err
	if checkErr == nil {
		checkErr = planCheck(ctx, a, f, contextDir, in)
	}
	if checkErr == nil {
		checkErr = in.lint.Err()
	}
	rep := checkReport{display: in.display, source: in.source, warnings: in.lint.Warnings(), err: checkErr}
	if call.json {
		if err := rep.writeJSON(a.stdout); err != nil {
			return err
		}
	} else {
		rep.writeText(a.stdout)
	}
	if checkErr != nil {
		return errors.New(strings.TrimSuffix(rep.errorText(), "\n"))
	}
	if len(rep.warnings) > 0 && !call.ignoreStatus {
		return exitError{code: 1}
	}
	return nil
}

// planCheck plans the build with the lint rules of the planner.
func planCheck(ctx context.Context, a *app, f *buildFlags, contextDir string, in checkInput) error {
	_, err := planOnly(ctx, a, f, contextDir, in, f.target == "")
	return err
}

// planOnly plans the build as --call check and outline do, without
// building: base images resolved (local store, else pulled), the
// .dockerignore read, the planner's lint rules on; every stage with all.
func planOnly(ctx context.Context, a *app, f *buildFlags, contextDir string, in checkInput, all bool) (*planner.Plan, error) {
	contexts, err := namedContexts(f.buildContexts)
	if err != nil {
		return nil, err
	}
	platforms, err := f.platformList()
	if err != nil {
		return nil, err
	}
	platform := platforms[0]
	patterns, err := ignorePatterns(contextDir, in.dfFile)
	if err != nil {
		return nil, err
	}
	st, err := a.open()
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := st.lockShared(ctx); err != nil {
		return nil, err
	}
	return planner.New(ctx, in.df, planner.Options{
		DockerfilePath: in.display,
		BuildArgs:      buildArgMap(f.buildArgs),
		Target:         f.target,
		Platform:       platform,
		BuildPlatform:  hostPlatform(),
		ResolveImage:   resolver(st, f.pull, a.remoteOptions(platform, func(string) {})),
		Contexts:       contexts,
		Lint:           in.lint.Linter(),
		AllStages:      all,
		IgnorePatterns: patterns,
	})
}

// checkReport is the result of a check, as buildkit's lint subrequest
// returns it (frontend/subrequests/lint).
type checkReport struct {
	display  string
	source   []byte
	warnings []parser.Warning
	err      error
}

// writeText prints the report as buildx's --call check does: a count,
// then each warning with its rule, URL, message and the lines around it.
func (r *checkReport) writeText(w io.Writer) {
	switch n := len(r.warnings); {
	case n == 1:
		fmt.Fprintln(w, "Check complete, 1 warning has been found!")
	case n > 1:
		fmt.Fprintf(w, "Check complete, %d warnings have been found!\n", n)
	}
	for _, x := range sortedWarnings(r.warnings) {
		fmt.Fprintf(w, "\nWARNING: %s", x.Rule)
		if x.URL != "" {
			fmt.Fprintf(w, " - %s", x.URL)
		}
		fmt.Fprintf(w, "\n%s\n", x.Message)
		printSource(w, r.display, r.source, x.Location)
	}
	switch {
	case r.err != nil && len(r.warnings) > 0:
		fmt.Fprintln(w)
	case r.err == nil && len(r.warnings) == 0:
		fmt.Fprintln(w, "Check complete, no warnings found.")
	}
}

// sortedWarnings orders warnings by line as buildkit's lint result does
// before it prints them: with sort.Slice, which is not stable, on the
// warnings in the order the rules found them, so that warnings of one
// line come out in buildkit's order too.
func sortedWarnings(ws []parser.Warning) []parser.Warning {
	out := slices.Clone(ws)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Location, out[j].Location
		if len(a) == 0 || len(b) == 0 {
			if len(a) == 0 && len(b) == 0 {
				return out[i].Rule < out[j].Rule
			}
			return len(a) == 0
		}
		return a[0].Start.Line < b[0].Start.Line
	})
	return out
}

// errorText is the error that stopped the check with the lines around
// its location, as buildx prints it.
func (r *checkReport) errorText() string {
	msg, loc := r.errorLocation()
	var b strings.Builder
	b.WriteString(msg + "\n")
	printSource(&b, r.display, r.source, loc)
	return b.String()
}

// errorLocation splits a Dockerfile error into buildkit's message (without
// builder's "FILE:LINE: INSTRUCTION:" prefix) and its location.
func (r *checkReport) errorLocation() (string, []bkparser.Range) {
	var pe *parser.Error
	if !errors.As(r.err, &pe) || pe.Line == 0 {
		return r.err.Error(), nil
	}
	pos := bkparser.Position{Line: pe.Line}
	return pe.Err.Error(), []bkparser.Range{{Start: pos, End: pos}}
}

// printSource prints the lines of loc with up to two lines around them,
// as buildkit's errdefs.Source.Print.
func printSource(w io.Writer, name string, data []byte, loc []bkparser.Range) {
	lines := strings.Split(string(data), "\n")
	start, end := parser.Span(loc)
	if len(loc) == 0 || start < 1 || start > len(lines) {
		return
	}
	end = min(max(end, start), len(lines))
	first, last := start, end
	for added := 0; added < 2; added++ {
		first, last = max(first-1, 1), min(last+1, len(lines))
		if end != start {
			break // a range of lines gets one line around it
		}
	}
	fmt.Fprintf(w, "%s:%d\n--------------------\n", name, start)
	for i := first; i <= last; i++ {
		mark := "   "
		if inRanges(loc, i) {
			mark = ">>>"
		}
		fmt.Fprintf(w, " %3d | %s %s\n", i, mark, lines[i-1])
	}
	fmt.Fprint(w, "--------------------\n")
}

func inRanges(loc []bkparser.Range, line int) bool {
	for _, r := range loc {
		if r.Start.Line <= line && max(r.End.Line, r.Start.Line) >= line {
			return true
		}
	}
	return false
}

// The JSON form of a check is buildkit's lint result (lint.LintResults):
// the same fields and names, without the LLB definition of the source,
// which builder does not have.
type lintJSON struct {
	Warnings []lintWarningJSON `json:"warnings"`
	Sources  []lintSourceJSON  `json:"sources"`
	Error    *lintErrorJSON    `json:"buildError,omitempty"`
}

type lintWarningJSON struct {
	RuleName    string        `json:"ruleName"`
	Description string        `json:"description,omitempty"`
	URL         string        `json:"url,omitempty"`
	Detail      string        `json:"detail,omitempty"`
	Location    *locationJSON `json:"location,omitempty"`
}

type lintSourceJSON struct {
	Filename string `json:"filename,omitempty"`
	Data     []byte `json:"data,omitempty"`
	Language string `json:"language,omitempty"`
}

type lintErrorJSON struct {
	Message  string       `json:"message"`
	Location locationJSON `json:"location"`
}

type locationJSON struct {
	SourceIndex int         `json:"sourceIndex,omitempty"`
	Ranges      []rangeJSON `json:"ranges,omitempty"`
}

type rangeJSON struct {
	Start positionJSON `json:"start"`
	End   positionJSON `json:"end"`
}

type positionJSON struct {
	Line      int `json:"line,omitempty"`
	Character int `json:"character,omitempty"`
}

func toLocationJSON(loc []bkparser.Range) locationJSON {
	var l locationJSON
	for _, r := range loc {
		l.Ranges = append(l.Ranges, rangeJSON{
			Start: positionJSON{Line: r.Start.Line, Character: r.Start.Character},
			End:   positionJSON{Line: r.End.Line, Character: r.End.Character},
		})
	}
	return l
}

func (r *checkReport) writeJSON(w io.Writer) error {
	out := lintJSON{Sources: []lintSourceJSON{{Filename: r.display, Data: r.source, Language: "Dockerfile"}}}
	for _, x := range r.warnings {
		loc := toLocationJSON(x.Location)
		out.Warnings = append(out.Warnings, lintWarningJSON{
			RuleName: x.Rule, Description: x.Description, URL: x.URL, Detail: x.Message, Location: &loc,
		})
	}
	if r.err != nil {
		msg, loc := r.errorLocation()
		out.Error = &lintErrorJSON{Message: msg, Location: toLocationJSON(loc)}
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
