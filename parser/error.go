package parser

import (
	"errors"
	"strconv"
	"strings"

	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Error is a Dockerfile error with its location. Error() reads like
//
//	Dockerfile:3: RUNN echo hi: dockerfile parse error on line 3: unknown instruction: RUNN (did you mean RUN?)
//
// Line is 0 when the error has no line (e.g. an empty file), and
// Instruction is empty when the error is not about one instruction.
type Error struct {
	Path        string
	Line        int
	Instruction string // first source line of the instruction, trimmed
	Err         error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Path)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Instruction != "" {
		b.WriteString(e.Instruction + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// maxInstructionText bounds Error.Instruction so that messages stay readable.
const maxInstructionText = 80

// ErrorAt returns an *Error for line (1-based; 0 for none), quoting the
// instruction that starts there. Planner and executor use it to report
// errors in the same format as Parse.
func (df *Dockerfile) ErrorAt(line int, err error) *Error {
	return &Error{Path: df.Path, Line: line, Instruction: df.instructionText(line), Err: err}
}

func (df *Dockerfile) instructionText(line int) string {
	if line < 1 || line > len(df.Lines) {
		return ""
	}
	s := strings.TrimSpace(df.Lines[line-1])
	if s == "" || strings.HasPrefix(s, "#") {
		return ""
	}
	if len(s) > maxInstructionText {
		s = s[:maxInstructionText] + "..."
	}
	return s
}

// nodeError locates err at the instruction node n.
func (df *Dockerfile) nodeError(n *bkparser.Node, err error) *Error {
	return df.ErrorAt(n.StartLine, err)
}

// astError converts an error of buildkit's parser.Parse, which carries a
// *parser.LocationError, into an *Error.
func (df *Dockerfile) astError(err error) *Error {
	line := 0
	var le *bkparser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		line = le.Locations[0][0].Start.Line
		if isDirectiveError(err) {
			line++ // buildkit reports directive errors 0-based
		}
	}
	if line > len(df.Lines) {
		line = len(df.Lines)
	}
	if isNoInstructions(err) {
		return &Error{Path: df.Path, Line: line, Err: err}
	}
	return df.ErrorAt(line, err)
}

func isDirectiveError(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "invalid escape token") || strings.Contains(msg, "parser directive can be used")
}

func isNoInstructions(err error) bool {
	return strings.Contains(err.Error(), "file with no instructions")
}
