package executor

import (
	"errors"
	"strings"
	"testing"

	"github.com/builder-dev/builder/parser"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// parseRunLine parses one RUN instruction with buildkit's parser.
func parseRunLine(t *testing.T, line string) *instructions.RunCommand {
	t.Helper()
	df, err := parser.Parse(strings.NewReader("FROM scratch\n"+line+"\n"), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	return df.Stages[0].Commands[0].(*instructions.RunCommand)
}

// RUN --security=insecure needs the security.insecure entitlement and
// fails with BuildKit's words without it; sandbox is the default.
func TestRunInsecure(t *testing.T) {
	cases := []struct {
		line    string
		allowed bool
		want    bool
		err     string
	}{
		{"RUN true", false, false, ""},
		{"RUN --security=sandbox true", false, false, ""},
		{"RUN --security=insecure true", false, false, "security.insecure is not allowed"},
		{"RUN --security=insecure true", true, true, ""},
		{"RUN --security=sandbox true", true, false, ""},
	}
	for _, c := range cases {
		b := &build{e: New(Options{AllowInsecure: c.allowed})}
		got, err := b.runInsecure(parseRunLine(t, c.line))
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrNeedsEntitlement) {
				t.Errorf("%s (allowed %v): got %v, want an entitlement error %q", c.line, c.allowed, err, c.err)
			}
		case err != nil || got != c.want:
			t.Errorf("%s (allowed %v): got %v, %v; want %v", c.line, c.allowed, got, err, c.want)
		}
	}
}
