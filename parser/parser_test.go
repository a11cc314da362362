package parser

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

var update = flag.Bool("update", false, "rewrite testdata want.json and want-error files")

// golden is the stable JSON view of a parsed Dockerfile stored in want.json.
type golden struct {
	Escape   string          `json:"escape"`
	Syntax   string          `json:"syntax,omitempty"`
	Check    string          `json:"check,omitempty"`
	MetaArgs []goldenCommand `json:"metaArgs,omitempty"`
	Stages   []goldenStage   `json:"stages"`
	Warnings []goldenWarning `json:"warnings,omitempty"`
}

// goldenWarning is a lint warning of ParseLint without its constant
// parts (the rule's description and URL) and its location (Line).
type goldenWarning struct {
	Line    int
	Rule    string
	Message string
}

type goldenStage struct {
	Name     string          `json:"name,omitempty"`
	BaseName string          `json:"baseName"`
	Platform string          `json:"platform,omitempty"`
	Line     int             `json:"line"`
	EndLine  int             `json:"endLine"`
	Text     string          `json:"text"`
	Commands []goldenCommand `json:"commands"`
}

type goldenCommand struct {
	Line    int                   `json:"line"`
	EndLine int                   `json:"endLine"`
	Type    string                `json:"type"`
	Text    string                `json:"text"`
	Cmd     instructions.Command  `json:"cmd"`
	Mounts  []*instructions.Mount `json:"mounts,omitempty"`
}

func goldenOf(df *Dockerfile, lint *Lint) golden {
	g := golden{Escape: string(df.Escape), Syntax: df.Syntax, Check: df.Check}
	for _, w := range lint.Warnings() {
		g.Warnings = append(g.Warnings, goldenWarning{Line: w.Line, Rule: w.Rule, Message: w.Message})
	}
	for i := range df.MetaArgs {
		g.MetaArgs = append(g.MetaArgs, goldenCmd(df, &df.MetaArgs[i]))
	}
	for _, st := range df.Stages {
		line, end := Span(st.Location)
		gs := goldenStage{Name: st.Name, BaseName: st.BaseName, Platform: st.Platform, Line: line, EndLine: end, Text: df.Text(line, end)}
		for _, c := range st.Commands {
			gs.Commands = append(gs.Commands, goldenCmd(df, c))
		}
		g.Stages = append(g.Stages, gs)
	}
	return g
}

func goldenJSON(t *testing.T, df *Dockerfile, lint *Lint) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(goldenOf(df, lint)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func goldenCmd(df *Dockerfile, c instructions.Command) goldenCommand {
	line, end := Span(c.Location())
	gc := goldenCommand{Line: line, EndLine: end, Type: fmt.Sprintf("%T", c), Text: df.Text(line, end), Cmd: c}
	if r, ok := c.(*instructions.RunCommand); ok {
		gc.Mounts = instructions.GetMounts(r)
		// buildkit fills FlagsUsed from a map: its order is meaningless.
		sort.Strings(r.FlagsUsed)
	}
	return gc
}

func caseDirs(t *testing.T, glob string) []string {
	t.Helper()
	dirs, err := filepath.Glob(glob)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "Dockerfile")); err == nil {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no test cases match %s", glob)
	}
	return out
}

func parseFile(t *testing.T, dir string) (*Dockerfile, error) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	return Parse(bytes.NewReader(data), "Dockerfile")
}

func TestParseGolden(t *testing.T) {
	for _, dir := range caseDirs(t, "testdata/*") {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			df, lint, err := ParseLint(bytes.NewReader(data), "Dockerfile", LintOptions{})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			plain, err := Parse(bytes.NewReader(data), "Dockerfile")
			if err != nil {
				t.Fatalf("Parse without lint: %v", err)
			}
			if diff := cmp.Diff(string(goldenJSON(t, df, nil)), string(goldenJSON(t, plain, nil))); diff != "" {
				t.Errorf("Parse and ParseLint differ (-lint +plain):\n%s", diff)
			}
			got := goldenJSON(t, df, lint)
			wantPath := filepath.Join(dir, "want.json")
			if *update {
				if err := os.WriteFile(wantPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(wantPath)
			if err != nil {
				t.Fatalf("%v (run go test ./parser -update)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", wantPath, diff)
			}
		})
	}
}

func TestParseNegative(t *testing.T) {
	for _, dir := range caseDirs(t, "testdata/negative/*") {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			df, err := parseFile(t, dir)
			if err == nil {
				t.Fatalf("Parse succeeded with %d stages, want an error", len(df.Stages))
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %q is not a *parser.Error", err, err)
			}
			got := err.Error() + "\n"
			wantPath := filepath.Join(dir, "want-error")
			if *update {
				if err := os.WriteFile(wantPath, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(wantPath)
			if err != nil {
				t.Fatalf("%v (run go test ./parser -update)", err)
			}
			if string(want) != got {
				t.Errorf("error:\n got: %s want: %s", got, want)
			}
		})
	}
}

// TestParseErrors covers inputs that are awkward to store as files.
func TestParseErrors(t *testing.T) {
	long := "FROM scratch\nRUN echo " + strings.Repeat("x", MaxLineBytes) + "\n"
	tests := []struct {
		name, in string
		line     int
		want     string
	}{
		{"empty", "", 0, "Dockerfile: file with no instructions"},
		{"long line", long, 2, "Dockerfile:2: RUN echo xxxx"},
		{"unterminated heredoc at eof", "FROM a\nRUN <<EOF\n", 2, "unterminated heredoc"},
		{"escape directive twice", "# escape=`\n# escape=\\\nFROM a\n", 2, "only one escape parser directive"},
		{"long line message", long, 2, "line is longer than 65535 bytes"},
		{"bom crlf unknown", "\ufeffFROM scratch\r\nRUNN echo hi\r\n", 2, "Dockerfile:2: RUNN echo hi: dockerfile parse error on line 2: unknown instruction: RUNN (did you mean RUN?)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.in), "Dockerfile")
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *parser.Error", err)
			}
			if pe.Line != tt.line {
				t.Errorf("line = %d, want %d", pe.Line, tt.line)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestUnknownInstructionUnwraps(t *testing.T) {
	_, err := Parse(strings.NewReader("FROM scratch\nFORM x\n"), "df")
	var ue *instructions.UnknownInstructionError
	if !errors.As(err, &ue) || ue.Instruction != "FORM" {
		t.Fatalf("errors.As UnknownInstructionError: %v", err)
	}
}

func TestReparseGivesIndependentCopy(t *testing.T) {
	df, err := Parse(strings.NewReader("FROM scratch\nWORKDIR $A\nRUN --mount=type=cache,target=$T echo\n"), "df")
	if err != nil {
		t.Fatal(err)
	}
	for _, orig := range df.Stages[0].Commands {
		c, err := df.Reparse(orig)
		if err != nil {
			t.Fatal(err)
		}
		ex := c.(instructions.SupportsSingleWordExpansion)
		if err := ex.Expand(func(w string) (string, error) { return strings.ReplaceAll(w, "$", "/x"), nil }); err != nil {
			t.Fatal(err)
		}
	}
	if w := df.Stages[0].Commands[0].(*instructions.WorkdirCommand); w.Path != "$A" {
		t.Errorf("original WORKDIR changed to %q", w.Path)
	}
	if m := instructions.GetMounts(df.Stages[0].Commands[1].(*instructions.RunCommand)); m[0].Target != "" {
		t.Errorf("original mount target changed to %q", m[0].Target)
	}
}

func TestParseTrigger(t *testing.T) {
	c, err := ParseTrigger("COPY --from=build /a /b", 7)
	if err != nil {
		t.Fatal(err)
	}
	cp, ok := c.(*instructions.CopyCommand)
	if !ok || cp.From != "build" {
		t.Fatalf("got %#v", c)
	}
	if line, _ := Span(c.Location()); line != 7 {
		t.Errorf("line = %d, want 7", line)
	}
	for _, bad := range []string{"FROM x", "ONBUILD RUN x", "RUNN x", "RUN a\nRUN b"} {
		if _, err := ParseTrigger(bad, 1); err == nil {
			t.Errorf("ParseTrigger(%q) succeeded", bad)
		}
	}
}
