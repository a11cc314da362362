package parser

import (
	"errors"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// validate reports errors that buildkit only finds when it dispatches a
// command, so that they surface before any work with the line.
func validate(n *bkparser.Node, c instructions.Command) error {
	run, ok := c.(*instructions.RunCommand)
	if !ok {
		return nil
	}
	if len(run.CmdLine) == 0 && len(run.Files) == 0 {
		return errors.New("RUN requires at least one argument")
	}
	return validateMounts(n)
}

// validateMounts parses the --mount options of a RUN fully (types, sharing
// modes, sizes) on a fresh copy of the node. Mounts whose options use
// variables are left to the planner, which expands them.
func validateMounts(n *bkparser.Node) error {
	for _, f := range n.Flags {
		if strings.HasPrefix(f, "--mount") && strings.Contains(f, "$") {
			return nil
		}
	}
	c, err := parseCommand(n)
	if err != nil {
		return err
	}
	identity := func(word string) (string, error) { return word, nil }
	return c.(*instructions.RunCommand).Expand(identity)
}
