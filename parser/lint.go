package parser

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// LintOptions configure the lint of ParseLint.
type LintOptions struct {
	// Check replaces the "# check=" directive when not nil, even when
	// empty (buildkit's BUILDKIT_DOCKERFILE_CHECK build arg):
	// "skip=Rule,...|all;error=true|false;experimental=Rule,...|all".
	Check *string
}

// checkArg is the build arg that replaces the "# check=" directive.
const checkArg = "BUILDKIT_DOCKERFILE_CHECK"

// newLint configures a Lint from opts.Check or else the directive of data.
func newLint(opts LintOptions, data []byte) (*Lint, error) {
	if opts.Check != nil {
		l, err := NewLint(*opts.Check)
		if err != nil {
			return nil, fmt.Errorf("failed to parse build-arg:%s: %w", checkArg, errors.Unwrap(err))
		}
		return l, nil
	}
	return NewLint(directive("check", data))
}

// Warning is one finding of a lint rule, as buildkit reports it: the rule,
// its description and documentation URL, the message (buildkit's
// "detail") and the location of the instruction.
type Warning struct {
	Line        int    // first line of Location, 0 for none
	Rule        string // e.g. "UndefinedVar"
	Message     string // e.g. "Usage of undefined variable '$foo'"
	Description string // the rule's description
	URL         string // the rule's documentation
	Location    []bkparser.Range
}

// Short is the warning as buildkit prints it in a build's progress:
// "Rule: message (line N)".
func (w Warning) Short() string {
	return linter.LintFormatShort(w.Rule, w.Message, w.Line)
}

// Lint collects the warnings of buildkit's Dockerfile lint rules for one
// build or check. Its Linter is buildkit's, configured by the "# check="
// directive (or LintOptions.Check): the parser evaluates the rules of
// buildkit's parser and those over all stages, the planner those that
// need the build's configuration, base images and stage graph.
type Lint struct {
	linter   *linter.Linter
	warnings []Warning
}

// NewLint returns an empty Lint configured by check ("" enables every
// rule that is not experimental). A bad check value is an error with
// buildkit's wording.
func NewLint(check string) (*Lint, error) {
	cfg, err := linter.ParseLintOptions(check)
	if err != nil {
		return nil, fmt.Errorf("failed to parse check options: %w", err)
	}
	l := &Lint{}
	cfg.Warn = l.add
	l.linter = linter.New(cfg)
	return l, nil
}

func (l *Lint) add(rule, description, url, msg string, loc []bkparser.Range) {
	l.warnings = append(l.warnings, Warning{
		Line: rangeLine(loc), Rule: rule, Message: msg,
		Description: description, URL: url, Location: slices.Clone(loc),
	})
}

// Linter returns the buildkit linter whose warnings l collects; rules run
// through it (or through its WithMergedConfigFromComments copies) land
// in Warnings. It is nil for a nil Lint, on which Run does nothing.
func (l *Lint) Linter() *linter.Linter {
	if l == nil {
		return nil
	}
	return l.linter
}

// Warnings returns the warnings in the order the rules found them, which
// is the order buildkit reports them in (a build's progress, a check's
// JSON result).
func (l *Lint) Warnings() []Warning {
	if l == nil {
		return nil
	}
	return slices.Clone(l.warnings)
}

// ErrLintViolation is the error of a check or build whose configuration
// says error=true when a rule reported a warning.
var ErrLintViolation = errors.New("lint violation found")

// Err is buildkit's error for error=true with warnings: "lint violation
// found for rules: A, B" (each rule once, in the order they fired); nil
// without error=true or without warnings.
func (l *Lint) Err() error {
	if l == nil || !l.linter.ReturnAsError || len(*l.linter.CalledRules) == 0 {
		return nil
	}
	var rules []string
	for _, r := range *l.linter.CalledRules {
		if !slices.Contains(rules, r) {
			rules = append(rules, r)
		}
	}
	return fmt.Errorf("%w for rules: %s", ErrLintViolation, strings.Join(rules, ", "))
}

// lintStages runs the rules buildkit's frontend evaluates on the parsed
// stages before anything else: stage names and instruction casing.
func lintStages(stages []instructions.Stage, lint *linter.Linter) {
	lintStageNames(stages, lint)
	lintCasing(stages, lint)
}

// lintStageNames reports reserved and duplicate stage names
// (validateStageNames).
func lintStageNames(stages []instructions.Stage, lint *linter.Linter) {
	seen := map[string]bool{}
	for _, st := range stages {
		if st.Name == "" {
			continue
		}
		if st.Name == "context" || st.Name == "scratch" {
			lint.Run(&linter.RuleReservedStageName, st.Location, linter.RuleReservedStageName.Format(st.Name))
		}
		if seen[st.Name] {
			lint.Run(&linter.RuleDuplicateStageName, st.Location, linter.RuleDuplicateStageName.Format(st.Name))
		}
		seen[st.Name] = true
	}
}

// lintCasing is buildkit's validateCommandCasing: every instruction
// keyword is all lower or all upper case, matching the majority.
func lintCasing(stages []instructions.Stage, lint *linter.Linter) {
	var lower, upper int
	count := func(s string) {
		switch s {
		case strings.ToLower(s):
			lower++
		case strings.ToUpper(s):
			upper++
		}
	}
	for _, st := range stages {
		count(st.OrigCmd)
		for _, c := range st.Commands {
			count(c.Name())
		}
	}
	majorityLower := lower > upper
	check := func(s string, loc []bkparser.Range) {
		want := ""
		if majorityLower && strings.ToLower(s) != s {
			want = "lowercase"
		} else if !majorityLower && strings.ToUpper(s) != s {
			want = "uppercase"
		}
		if want != "" {
			lint.Run(&linter.RuleConsistentInstructionCasing, loc, linter.RuleConsistentInstructionCasing.Format(s, want))
		}
	}
	for _, st := range stages {
		check(st.OrigCmd, st.Location)
		for _, c := range st.Commands {
			check(c.Name(), c.Location())
		}
	}
}
