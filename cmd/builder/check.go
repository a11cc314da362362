package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/builder-dev/builder/parser"
)

// checkArg is the build arg that replaces the "# check=" directive, as in
// buildkit's Dockerfile frontend.
const checkArg = "BUILDKIT_DOCKERFILE_CHECK"

// errLintViolation fails a check (or build) whose configuration says
// error=true when there are warnings.
var errLintViolation = errors.New("lint violation found")

// lintDockerfile evaluates the lint rules on df with the check
// configuration of the directive or --build-arg BUILDKIT_DOCKERFILE_CHECK.
func lintDockerfile(df *parser.Dockerfile, buildArgs map[string]*string) (*parser.LintResult, error) {
	var opts parser.LintOptions
	if v := buildArgs[checkArg]; v != nil {
		opts.Check = *v
	}
	return df.Lint(opts)
}

// runCheck is `builder build --check`: it prints the lint warnings of the
// Dockerfile, one per line as "FILE:LINE: Rule: message", and a summary,
// without building. It fails when the check configuration says
// error=true and there are warnings.
func runCheck(w io.Writer, df *parser.Dockerfile, display string, buildArgs map[string]*string) error {
	res, err := lintDockerfile(df, buildArgs)
	if err != nil {
		return err
	}
	for _, l := range lintLines(display, res.Warnings) {
		fmt.Fprintln(w, l)
	}
	switch n := len(res.Warnings); n {
	case 0:
		fmt.Fprintln(w, "Check complete, no warnings found.")
	case 1:
		fmt.Fprintln(w, "Check complete, 1 warning has been found!")
	default:
		fmt.Fprintf(w, "Check complete, %d warnings have been found!\n", n)
	}
	return lintError(res)
}

// lintLines formats warnings as "FILE:LINE: Rule: message".
func lintLines(display string, ws []parser.Warning) []string {
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		out = append(out, fmt.Sprintf("%s:%d: %s: %s", display, w.Line, w.Rule, w.Message))
	}
	return out
}

// lintError is buildkit's error for error=true with warnings: the rules
// that fired.
func lintError(res *parser.LintResult) error {
	if !res.Fail {
		return nil
	}
	var rules []string
	for _, w := range res.Warnings {
		if !slices.Contains(rules, w.Rule) {
			rules = append(rules, w.Rule)
		}
	}
	return fmt.Errorf("%w for rules: %s", errLintViolation, strings.Join(rules, ", "))
}

// lintBuild reports the lint warnings of a build as notices, as buildkit
// does, and fails the build before any work when the check configuration
// says error=true.
func lintBuild(df *parser.Dockerfile, display string, buildArgs map[string]*string, notice func(string)) error {
	res, err := lintDockerfile(df, buildArgs)
	if err != nil {
		return err
	}
	if n := len(res.Warnings); n > 0 {
		notice(plural(n, "warning") + " found:")
	}
	for _, w := range res.Warnings {
		// BuildKit's form: " - Rule: message (line N)".
		where := fmt.Sprintf("line %d", w.Line)
		if display != "Dockerfile" {
			where = fmt.Sprintf("%s line %d", display, w.Line)
		}
		notice(fmt.Sprintf(" - %s: %s (%s)", w.Rule, w.Message, where))
	}
	return lintError(res)
}
