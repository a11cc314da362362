// Package parser reads a Dockerfile into typed stages using buildkit's
// frontend/dockerfile/parser and instructions packages. It never touches
// the filesystem.
package parser

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// MaxLineBytes is the longest source line Parse accepts, as in buildkit's
// scanner (bufio.MaxScanTokenSize - 1).
const MaxLineBytes = 64*1024 - 1

// Dockerfile is a parsed Dockerfile. It is immutable after Parse; use
// Reparse to get a command that may be modified (expanded).
type Dockerfile struct {
	Path     string                    // as given to Parse, for messages
	Stages   []instructions.Stage      // in source order
	MetaArgs []instructions.ArgCommand // ARGs before the first FROM
	Escape   rune                      // from the "# escape=" directive, default '\\'
	Syntax   string                    // frontend image of the "# syntax=" directive, if any
	// SyntaxLine is the line of the syntax directive (0 without one).
	SyntaxLine int
	Check      string   // "# check=" directive, if any
	Lines      []string // source lines (BOM and CR stripped), for showing instructions in errors
	// Nodes are the AST nodes of every instruction (meta ARGs, FROMs and
	// commands) in source order; Reparse uses them to make fresh copies.
	Nodes []*bkparser.Node
}

// Parse reads a Dockerfile from r. path names the file in errors and in
// Dockerfile.Path. Every error is a *Error carrying the line when one is
// known. Parse never panics on bad input.
func Parse(r io.Reader, path string) (*Dockerfile, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return parse(data, path, nil)
}

// ParseLint is Parse with buildkit's lint: the rules its parser evaluates
// (NoEmptyContinuation, MaintainerDeprecated, StageNameCasing,
// FromAsCasing, InvalidDefinitionDescription) and those its frontend then
// evaluates over all stages (ReservedStageName, DuplicateStageName,
// ConsistentInstructionCasing), configured by opts.Check or else the
// "# check=" directive. The rules that need the build's configuration
// are the planner's (planner.Options.Lint). The Lint is returned with a
// parse error too, holding the warnings found before it, which buildkit
// reports; it is nil only when reading r or the check configuration
// fails.
func ParseLint(r io.Reader, path string, opts LintOptions) (*Dockerfile, *Lint, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	lint, err := newLint(opts, data)
	if err != nil {
		return nil, nil, &Error{Path: path, Err: err}
	}
	df, err := parse(data, path, lint.Linter())
	if err != nil {
		return nil, lint, err
	}
	lintStages(df.Stages, lint.Linter())
	return df, lint, nil
}

func parse(data []byte, path string, lint *linter.Linter) (df *Dockerfile, err error) {
	defer func() {
		if p := recover(); p != nil {
			df, err = nil, &Error{Path: path, Err: fmt.Errorf("internal parser error: %v", p)}
		}
	}()
	if lint == nil {
		lint = linter.New(&linter.Config{}) // reports nothing
	}
	df = &Dockerfile{Path: path, Lines: splitLines(data)}
	if n := df.longLine(); n > 0 {
		return nil, df.ErrorAt(n, fmt.Errorf("line is longer than %d bytes", MaxLineBytes))
	}
	res, err := bkparser.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, df.astError(err)
	}
	df.Escape = res.EscapeToken
	df.Syntax, df.SyntaxLine = syntax(data)
	df.Check = directive("check", data)
	for _, w := range res.Warnings {
		if w.URL == linter.RuleNoEmptyContinuation.URL && w.Location != nil {
			lint.Run(&linter.RuleNoEmptyContinuation, []bkparser.Range{*w.Location}, linter.RuleNoEmptyContinuation.Format())
		}
	}
	if err := df.parseInstructions(res.AST, lint); err != nil {
		return nil, err
	}
	return df, nil
}

// parseInstructions turns the AST into stages and meta ARGs, as
// instructions.Parse does, but keeps the node of every failure.
func (df *Dockerfile) parseInstructions(ast *bkparser.Node, lint *linter.Linter) error {
	for _, n := range ast.Children {
		v, err := instructions.ParseInstructionWithLinter(n, lint)
		if err != nil {
			// buildkit's wording (instructions.Parse)
			return df.nodeError(n, fmt.Errorf("dockerfile parse error on line %d: %w", n.StartLine, err))
		}
		df.Nodes = append(df.Nodes, n)
		switch c := v.(type) {
		case *instructions.Stage:
			df.Stages = append(df.Stages, *c)
		case instructions.Command:
			if a, ok := c.(*instructions.ArgCommand); ok && len(df.Stages) == 0 {
				df.MetaArgs = append(df.MetaArgs, *a)
				continue
			}
			if len(df.Stages) == 0 {
				return df.nodeError(n, errors.New("no build stage in current context"))
			}
			if err := validate(n, c); err != nil {
				return df.nodeError(n, err)
			}
			df.Stages[len(df.Stages)-1].AddCommand(c)
		default:
			return df.nodeError(n, fmt.Errorf("%T is not a command type", v))
		}
	}
	if len(df.Stages) == 0 {
		return &Error{Path: df.Path, Err: errors.New("dockerfile contains no stages to build (no FROM instruction)")}
	}
	return nil
}

// longLine returns the 1-based number of the first line longer than
// MaxLineBytes, or 0.
func (df *Dockerfile) longLine() int {
	for i, l := range df.Lines {
		if len(l) > MaxLineBytes {
			return i + 1
		}
	}
	return 0
}

// splitLines splits data into lines without their "\n" or "\r\n" and
// strips a leading UTF-8 byte-order mark.
func splitLines(data []byte) []string {
	data = bytes.TrimPrefix(data, []byte{0xEF, 0xBB, 0xBF})
	if len(data) == 0 {
		return nil
	}
	s := strings.TrimSuffix(string(data), "\n")
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines
}

// directive returns the value of the "# key=value" parser directive.
func directive(key string, data []byte) string {
	_, v, _, ok := bkparser.ParseDirective(key, data)
	if !ok {
		return ""
	}
	return v
}

func rangeLine(r []bkparser.Range) int {
	if len(r) == 0 {
		return 0
	}
	return r[0].Start.Line
}
