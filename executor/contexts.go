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

// useNamedContext points every mount of ms reading from= name at the
// directory context nc: bind mounts select from it with its ignore file,
// cache mounts seed from its root. The key names the context; the bound
// files' content is keyed like any bind source.
func useNamedContext(ms []*runMount, from string, nc *planner.NamedContext) error {
	c, err := openNamedContext(nc)
	if err != nil {
		return err
	}
	for _, rm := range ms {
		if rm.needsFrom() && rm.From == from {
			rm.srcCtx, rm.srcRoot, rm.FromKey = c, c.Root(), "context:"+nc.Name
		}
	}
	return nil
}
