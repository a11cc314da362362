package parser

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Span returns the first and last source line (1-based) of a location as
// carried by instructions.Command.Location and instructions.Stage.Location.
func Span(loc []bkparser.Range) (line, end int) {
	for i, r := range loc {
		if i == 0 || r.Start.Line < line {
			line = r.Start.Line
		}
		if r.End.Line > end {
			end = r.End.Line
		}
	}
	return line, end
}

// Text returns the original source of lines line..end (1-based, inclusive),
// heredoc bodies and continuation lines included.
func (df *Dockerfile) Text(line, end int) string {
	if line < 1 || line > len(df.Lines) {
		return ""
	}
	end = min(max(end, line), len(df.Lines))
	return strings.Join(df.Lines[line-1:end], "\n")
}

// Reparse returns a fresh copy of cmd, parsed again from its AST node, so
// that the copy can be expanded without changing df. cmd must come from df.
func (df *Dockerfile) Reparse(cmd instructions.Command) (instructions.Command, error) {
	line, _ := Span(cmd.Location())
	i := sort.Search(len(df.Nodes), func(i int) bool { return df.Nodes[i].StartLine >= line })
	if i == len(df.Nodes) || df.Nodes[i].StartLine != line {
		return nil, df.ErrorAt(line, fmt.Errorf("reparse %s: no instruction at this line", cmd.Name()))
	}
	c, err := parseCommand(df.Nodes[i])
	if err != nil {
		return nil, df.nodeError(df.Nodes[i], err)
	}
	return c, nil
}

// ParseTrigger parses one ONBUILD trigger expression, such as
// "RUN make" from an image config's OnBuild list or an
// instructions.OnbuildCommand's Expression. The command's location is set
// to line (the line of the FROM that triggers it), as buildkit does.
func ParseTrigger(expr string, line int) (instructions.Command, error) {
	res, err := bkparser.Parse(strings.NewReader(expr))
	if err != nil {
		return nil, fmt.Errorf("parse ONBUILD trigger %q: %w", expr, err)
	}
	if len(res.AST.Children) != 1 {
		return nil, fmt.Errorf("parse ONBUILD trigger %q: %w", expr, errors.New("trigger must be a single instruction"))
	}
	n := res.AST.Children[0]
	n.StartLine, n.EndLine = line, line
	switch strings.ToUpper(n.Value) {
	case "ONBUILD", "FROM", "MAINTAINER":
		return nil, fmt.Errorf("parse ONBUILD trigger %q: %s isn't allowed as an ONBUILD trigger", expr, strings.ToUpper(n.Value))
	}
	c, err := parseCommand(n)
	if err != nil {
		return nil, fmt.Errorf("parse ONBUILD trigger %q: %w", expr, err)
	}
	return c, nil
}

// parseCommand parses node into a command with a linter that reports
// nothing: buildkit's ParseCommand passes a nil linter, which panics on a
// node preceded by a "# check=" comment. Lint warnings are collected once,
// by Parse.
func parseCommand(node *bkparser.Node) (instructions.Command, error) {
	v, err := instructions.ParseInstructionWithLinter(node, linter.New(&linter.Config{}))
	if err != nil {
		return nil, err
	}
	c, ok := v.(instructions.Command)
	if !ok {
		return nil, bkparser.WithLocation(fmt.Errorf("%s is not allowed here", strings.ToUpper(node.Value)), node.Location())
	}
	return c, nil
}
