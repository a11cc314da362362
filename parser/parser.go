// Package parser reads a Dockerfile into typed stages using buildkit's
// frontend/dockerfile/parser and instructions packages. It never touches
// the filesystem.
package parser

import (
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// Dockerfile is a parsed Dockerfile.
type Dockerfile struct {
	Path     string                    // as given to Parse, for messages
	Stages   []instructions.Stage      // in source order
	MetaArgs []instructions.ArgCommand // ARGs before the first FROM
	Escape   rune                      // from the "# escape=" directive, default '\\'
	Syntax   string                    // "# syntax=" directive, if any
	Lines    []string                  // source lines, for showing instructions in errors
	Warnings []Warning
}

// Warning is a non-fatal finding (e.g. a lint rule) with its line.
type Warning struct {
	Line    int
	Rule    string
	Message string
}
