package parser

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// builtinFrontends are the repositories of BuildKit's Dockerfile frontend
// images, whose syntax builder's built-in frontend (BuildKit v0.34.2's
// dockerfile2llb) implements.
var builtinFrontends = []string{"docker/dockerfile", "docker/dockerfile-upstream"}

// syntax reads the "# syntax=" directive as BuildKit detects it (also
// "//syntax=" and a JSON "syntax" key, after an optional #! line): the
// frontend image reference (its first word) and its 1-based line.
func syntax(data []byte) (ref string, line int) {
	ref, _, loc, ok := bkparser.DetectSyntax(data)
	if !ok {
		return "", 0
	}
	if len(loc) > 0 {
		line = loc[0].Start.Line
	}
	return ref, line
}

// CheckFrontend fails when the Dockerfile asks for a frontend other than
// the Dockerfile frontend builder has built in. BuildKit would pull the
// image named by the BUILDKIT_SYNTAX build arg (override, when not empty)
// or the "# syntax=" directive and let it build; builder cannot run
// frontend images, so it builds a directive naming docker/dockerfile (any
// tag: the built-in frontend is BuildKit v0.34.2's) itself, and refuses
// any other rather than build with different semantics.
func (df *Dockerfile) CheckFrontend(override string) error {
	ref, line := df.Syntax, df.SyntaxLine
	if override = strings.TrimSpace(override); override != "" {
		ref, _, _ = strings.Cut(override, " ")
		line = 0
	}
	if ref == "" || isBuiltinFrontend(ref) {
		return nil
	}
	err := fmt.Errorf("unsupported frontend %s: builder builds with its built-in Dockerfile frontend (BuildKit v0.34.2's, the syntax of docker/dockerfile:1) and cannot run frontend images; remove the syntax directive or name docker/dockerfile", ref)
	if line == 0 {
		return &Error{Path: df.Path, Err: fmt.Errorf("BUILDKIT_SYNTAX: %w", err)}
	}
	return df.ErrorAt(line, err)
}

func isBuiltinFrontend(ref string) bool {
	r, err := name.ParseReference(ref)
	if err != nil {
		return false
	}
	if r.Context().RegistryStr() != name.DefaultRegistry {
		return false
	}
	for _, f := range builtinFrontends {
		if r.Context().RepositoryStr() == f {
			return true
		}
	}
	return false
}
