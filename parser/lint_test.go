package parser

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// multiIssue has at least one finding of every rule Lint evaluates. The
// expected rule names and lines follow buildkit's rule documentation
// (frontend/dockerfile/docs/rules/*.md in buildkit v0.34.2) and the
// order in which its frontend evaluates them.
const multiIssue = `ARG VERSION=3
FROM busybox:${VERSON} as Build
maintainer someone
ENV A 1
LABEL c 3
WORKDIR rel/dir
CMD echo hi
CMD ["true"]
FROM build AS second
WORKDIR other
ENTRYPOINT echo x
FROM scratch AS second
SHELL ["/bin/sh", "-c"]
CMD echo ok
ENV MY_TOKEN=x
ARG PUBLIC_KEY
FROM alpine AS context
RUN true \

  && false
`

type finding struct {
	Line int
	Rule string
}

func lintFindings(t *testing.T, src string, opts LintOptions) ([]finding, *LintResult) {
	t.Helper()
	df, err := Parse(strings.NewReader(src), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	res, err := df.Lint(opts)
	if err != nil {
		t.Fatal(err)
	}
	var got []finding
	for _, w := range res.Warnings {
		if w.Message == "" {
			t.Errorf("line %d %s: empty message", w.Line, w.Rule)
		}
		got = append(got, finding{w.Line, w.Rule})
	}
	return got, res
}

func TestLint(t *testing.T) {
	all := []finding{
		{2, "StageNameCasing"}, {2, "FromAsCasing"},
		{2, "UndefinedArgInFrom"}, {2, "InvalidDefaultArgInFrom"},
		{3, "MaintainerDeprecated"}, {3, "ConsistentInstructionCasing"},
		{4, "LegacyKeyValueFormat"}, {5, "LegacyKeyValueFormat"},
		{6, "WorkdirRelativePath"},
		{7, "JSONArgsRecommended"}, {7, "MultipleInstructionsDisallowed"},
		// line 10: no WorkdirRelativePath, the base stage set a workdir
		{11, "JSONArgsRecommended"},
		{12, "DuplicateStageName"},
		// line 14: no JSONArgsRecommended after SHELL
		{15, "SecretsUsedInArgOrEnv"},
		// line 16: PUBLIC_KEY is allowed
		{17, "ReservedStageName"},
		{20, "NoEmptyContinuation"}, // buildkit names the last line of the instruction
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
	tests := []struct {
		name, src string
		opts      LintOptions
		want      []finding
		fail      bool
	}{
		{name: "all rules", src: multiIssue, want: all},
		{name: "error=true", src: "# check=error=true\n" + multiIssue, want: shift(all, 1), fail: true},
		{name: "skip list", src: "# check=skip=JSONArgsRecommended,FromAsCasing\n" + multiIssue,
			want: shift(without("JSONArgsRecommended", "FromAsCasing"), 1)},
		{name: "skip all with error", src: "# check=skip=all;error=true\n" + multiIssue},
		{name: "option overrides directive", src: "# check=skip=all\n" + multiIssue,
			opts: LintOptions{Check: "skip=NoEmptyContinuation,StageNameCasing;error=true"},
			want: shift(without("NoEmptyContinuation", "StageNameCasing"), 1), fail: true},
		{name: "comment above an instruction", src: "FROM scratch\n# check=skip=JSONArgsRecommended\nCMD a\nCMD [\"b\"]\n",
			want: []finding{{3, "MultipleInstructionsDisallowed"}}},
		{name: "predefined and declared args", src: "ARG TAG\nFROM --platform=$BUILDPLATFORM busybox:${TAG:-1} AS a\nFROM a\nWORKDIR $HOME\nCMD [\"x\"]\n"},
		{name: "clean", src: "FROM busybox\nWORKDIR /app\nENV A=1\nCMD [\"sh\"]\n"},
		{name: "lower case majority", src: "from busybox\nrun true\nCOPY a b\n", want: []finding{{3, "ConsistentInstructionCasing"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, res := lintFindings(t, tt.src, tt.opts)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
			if res.Fail != tt.fail {
				t.Errorf("Fail = %v, want %v", res.Fail, tt.fail)
			}
		})
	}
}

func shift(fs []finding, n int) []finding {
	out := make([]finding, len(fs))
	for i, f := range fs {
		out[i] = finding{f.Line + n, f.Rule}
	}
	return out
}

func TestLintMessages(t *testing.T) {
	df, err := Parse(strings.NewReader(multiIssue), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	res, err := df.Lint(LintOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"UndefinedArgInFrom":  "FROM argument 'VERSON' is not declared (did you mean VERSION?)",
		"WorkdirRelativePath": `Relative workdir "rel/dir" can have unexpected results if the base image changes`,
		"DuplicateStageName":  `Duplicate stage name "second", stage names should be unique`,
	}
	for _, w := range res.Warnings {
		if m, ok := want[w.Rule]; ok && w.Message != m {
			t.Errorf("%s message = %q, want %q", w.Rule, w.Message, m)
		}
	}
}

func TestLintBadCheckOption(t *testing.T) {
	df, err := Parse(strings.NewReader("# check=bogus\nFROM scratch\n"), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	_, err = df.Lint(LintOptions{})
	var pe *Error
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("Lint() error = %v, want a *parser.Error naming the option", err)
	}
}

// TestLintExpansionBudget: meta ARGs that double a value at every line
// do not make Lint allocate without bound (2^40 bytes here); it gives up
// on the FROM-argument rules, which the planner then fails on.
func TestLintExpansionBudget(t *testing.T) {
	src := "ARG A=xxxxxxxxxxxxxxxx\n" + strings.Repeat("ARG A=$A$A\n", 40) + "FROM busybox:$A\n"
	df, err := Parse(strings.NewReader(src), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := df.Lint(LintOptions{}); err != nil {
		t.Fatalf("Lint: %v", err)
	}
}
