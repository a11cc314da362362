package executor

import (
	"fmt"

	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/planner"
)

// openNamedContext opens a named directory context (--build-context
// NAME=DIR). Only DIR/.dockerignore applies: the Dockerfile's own ignore
// file belongs to the main context, as in buildx.
func openNamedContext(nc *planner.NamedContext) (*buildcontext.Context, error) {
	patterns, err := buildcontext.ReadIgnore(nc.Dir, "")
	if err != nil {
		return nil, fmt.Errorf("build context %s: %w", nc.Name, err)
	}
	c, err := buildcontext.Open(nc.Dir, patterns)
	if err != nil {
		return nil, fmt.Errorf("build context %s: %w", nc.Name, err)
	}
	return c, nil
}
