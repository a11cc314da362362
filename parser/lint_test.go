package parser

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
)

// multiIssue has at least one finding of every rule ParseLint evaluates.
// The expected rule names, lines and messages follow buildkit v0.34.2
// (frontend/dockerfile/instructions/parse.go, dockerfile2llb's
// validateStageNames and validateCommandCasing, linter/ruleset.go).
const multiIssue = `FROM busybox as Build
maintainer someone
# Build the thing
FROM build AS second
FROM scratch AS second
FROM alpine AS context
RUN true \

  && false
`

type finding struct {
	Line          int
	Rule, Message string
}

func parseLint(t *testing.T, src string, opts LintOptions) (*Lint, error) {
	t.Helper()
	df, lint, err := ParseLint(strings.NewReader(src), "Dockerfile", opts)
	if err == nil && df == nil {
		t.Fatal("ParseLint returned neither a Dockerfile nor an error")
	}
	if lint == nil {
		t.Fatalf("ParseLint returned no Lint (err %v)", err)
	}
	return lint, err
}

func findings(lint *Lint) []finding {
	var got []finding
	for _, w := range lint.Warnings() {
		got = append(got, finding{w.Line, w.Rule, w.Message})
	}
	return got
}

func TestParseLint(t *testing.T) {
	// In the order buildkit's rules find them: the scanner's, each
	// instruction's, then those over all stages.
	all := []finding{
		{9, "NoEmptyContinuation", "Empty continuation line"}, // buildkit names the last line of the instruction
		{1, "StageNameCasing", "Stage name 'Build' should be lowercase"},
		{1, "FromAsCasing", "'as' and 'FROM' keywords' casing do not match"},
		{2, "MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label"},
		{5, "DuplicateStageName", `Duplicate stage name "second", stage names should be unique`},
		{6, "ReservedStageName", `Stage name should not use the same name as reserved stage "context"`},
		{2, "ConsistentInstructionCasing", "Command 'maintainer' should match the case of the command majority (uppercase)"},
	}
	without := func(rules ...string) []finding {
		var out []finding
		for _, f := range all {
			if !strings.Contains(strings.Join(rules, ","), f.Rule) {
				out = append(out, f)
			}
		}
		return out
	}
	check := func(s string) *string { return &s }
	tests := []struct {
		name, src string
		opts      LintOptions
		want      []finding
		err       string // of Err
	}{
		{name: "all rules", src: multiIssue, want: all},
		{name: "error=true", src: "# check=error=true\n" + multiIssue, want: shift(all, 1),
			err: "lint violation found for rules: NoEmptyContinuation, StageNameCasing, FromAsCasing, MaintainerDeprecated, DuplicateStageName, ReservedStageName, ConsistentInstructionCasing"},
		{name: "skip list", src: "# check=skip=FromAsCasing, NoEmptyContinuation\n" + multiIssue,
			want: shift(without("FromAsCasing", "NoEmptyContinuation"), 1)},
		{name: "skip all with error", src: "# check=skip=all;error=true\n" + multiIssue},
		{name: "build arg replaces the directive", src: "# check=skip=all\n" + multiIssue,
			opts: LintOptions{Check: check("skip=NoEmptyContinuation,StageNameCasing;error=true")},
			want: shift(without("NoEmptyContinuation", "StageNameCasing"), 1),
			err:  "lint violation found for rules: FromAsCasing, MaintainerDeprecated, DuplicateStageName, ReservedStageName, ConsistentInstructionCasing"},
		{name: "empty build arg replaces the directive", src: "# check=skip=all\nFROM scratch as a\n",
			opts: LintOptions{Check: check("")},
			want: []finding{{2, "FromAsCasing", "'as' and 'FROM' keywords' casing do not match"}}},
		{name: "comment above an instruction", src: "FROM scratch\n# check=skip=MaintainerDeprecated\nMAINTAINER a\nMAINTAINER b\n",
			want: []finding{{4, "MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label"}}},
		{name: "experimental rule", src: "# check=experimental=InvalidDefinitionDescription\n# the base image\nFROM scratch AS base\n# foo the argument\nARG bar\n",
			want: []finding{
				{3, "InvalidDefinitionDescription", "Comment for FROM should follow the format: `# base <description>`"},
				{5, "InvalidDefinitionDescription", "Comment for ARG should follow the format: `# bar <description>`"},
			}},
		{name: "experimental rule off by default", src: "# the base image\nFROM scratch AS base\n"},
		{name: "clean", src: "FROM busybox AS base\nWORKDIR /app\nENV A=1\nCMD [\"sh\"]\n"},
		{name: "lower case majority", src: "from busybox\nrun true\nCOPY a b\n",
			want: []finding{{3, "ConsistentInstructionCasing", "Command 'COPY' should match the case of the command majority (lowercase)"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lint, err := parseLint(t, tt.src, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, findings(lint)); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
			gotErr := ""
			if err := lint.Err(); err != nil {
				gotErr = err.Error()
				if !errors.Is(err, ErrLintViolation) {
					t.Errorf("Err() %v is not ErrLintViolation", err)
				}
			}
			if gotErr != tt.err {
				t.Errorf("Err() = %q, want %q", gotErr, tt.err)
			}
		})
	}
}

func shift(fs []finding, n int) []finding {
	out := make([]finding, len(fs))
	for i, f := range fs {
		out[i] = f
		out[i].Line += n
	}
	return out
}

// TestParseLintRuleFields: each warning carries its rule's description
// and URL, and the instruction's location, as buildkit's lint result.
func TestParseLintRuleFields(t *testing.T) {
	lint, err := parseLint(t, "FROM scratch\nMAINTAINER me \\\n  you\n", LintOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ws := lint.Warnings()
	if len(ws) != 1 {
		t.Fatalf("warnings = %+v, want one", ws)
	}
	w, rule := ws[0], linter.RuleMaintainerDeprecated
	if w.Description != rule.Description || w.URL != rule.URL {
		t.Errorf("description, URL = %q, %q; want %q, %q", w.Description, w.URL, rule.Description, rule.URL)
	}
	if line, end := Span(w.Location); line != 2 || end != 3 {
		t.Errorf("location = %+v, want lines 2-3", w.Location)
	}
	if got, want := w.Short(), "MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)"; got != want {
		t.Errorf("Short() = %q, want %q", got, want)
	}
}

// TestParseLintWarningsBeforeError: a parse error keeps the warnings of
// the instructions before it (buildkit reports them, then fails), not of
// those after it (testWarningsBeforeError).
func TestParseLintWarningsBeforeError(t *testing.T) {
	src := "\nFROM scratch AS BadStageName\nMAINTAINER me@example.org\nBADCMD\nMAINTAINER again\n"
	lint, err := parseLint(t, src, LintOptions{})
	var pe *Error
	if !errors.As(err, &pe) || pe.Line != 4 || !strings.Contains(err.Error(), "dockerfile parse error on line 4: unknown instruction: BADCMD") {
		t.Fatalf("error = %v, want buildkit's parse error at line 4", err)
	}
	want := []finding{
		{2, "StageNameCasing", "Stage name 'BadStageName' should be lowercase"},
		{3, "MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label"},
	}
	if diff := cmp.Diff(want, findings(lint)); diff != "" {
		t.Errorf("findings (-want +got):\n%s", diff)
	}
}

func TestParseLintBadCheckOption(t *testing.T) {
	bogus := "bogus"
	for _, tt := range []struct {
		src  string
		opts LintOptions
		want string
	}{
		{"# check=bogus\nFROM scratch\n", LintOptions{}, `failed to parse check options: invalid check option "bogus"`},
		{"FROM scratch\n", LintOptions{Check: &bogus}, `failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: invalid check option "bogus"`},
		{"# check=error=maybe\nFROM scratch\n", LintOptions{}, `failed to parse check options: failed to parse check option "error=maybe"`},
	} {
		_, lint, err := ParseLint(strings.NewReader(tt.src), "Dockerfile", tt.opts)
		var pe *Error
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.want) || lint != nil {
			t.Errorf("%q: error = %v (lint %v), want a *parser.Error containing %q", tt.src, err, lint, tt.want)
		}
	}
}

// TestLintNil: a nil Lint has no linter, warnings or error.
func TestLintNil(t *testing.T) {
	var l *Lint
	if l.Linter() != nil || l.Warnings() != nil || l.Err() != nil {
		t.Error("nil Lint is not empty")
	}
}
