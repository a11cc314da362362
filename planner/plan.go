// Package planner turns a parsed Dockerfile into a Plan: the stage DAG pruned
// to the target, with every instruction's variables expanded exactly as
// Docker does (buildkit's shell lexer), build args scoped per stage, and
// ONBUILD triggers of base images inserted. It is pure: it never touches the
// filesystem; base image configs come through Options.ResolveImage.
package planner

import (
	"context"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
)

// ImageInfo is a resolved base image.
type ImageInfo struct {
	Ref    string         // the reference as the user wrote it, expanded
	Digest string         // manifest digest "sha256:<hex>"
	Config *v1.ConfigFile // never nil
	// Index is the digest of the image index Ref resolved to, when it
	// names one (a multi-platform image); "" otherwise. It is what
	// BuildKit reports as the image's resolved digest (progress, provenance);
	// keys use Digest.
	Index string
}

// Resolved is the digest the reference resolved to: its index's, else
// the image manifest's.
func (ii *ImageInfo) Resolved() string {
	if ii.Index != "" {
		return ii.Index
	}
	return ii.Digest
}

// Options configure New.
type Options struct {
	// DockerfilePath names the Dockerfile in errors.
	DockerfilePath string
	// BuildArgs are --build-arg values. A nil value means "--build-arg K"
	// without "=" (take it from the environment, resolved by the caller
	// before New; nil here means unset).
	BuildArgs map[string]*string
	// Target is the --target stage name; empty means the last stage.
	Target string
	// Platform is the target platform (--platform); zero means the host's.
	Platform v1.Platform
	// BuildPlatform is the platform of the machine running the build.
	BuildPlatform v1.Platform
	// ResolveImage returns the config of an image reference for FROM and
	// COPY --from=<image>. It is called once per distinct reference.
	ResolveImage func(ctx context.Context, ref string, platform v1.Platform) (*ImageInfo, error)
	// Contexts are the named build contexts (--build-context): each
	// replaces the stage or image of its name.
	Contexts []NamedContext
	// ResolveEpoch returns the time of a SOURCE_DATE_EPOCH stage's remote
	// source (nil: it has none). Needed only when SOURCE_DATE_EPOCH names
	// a stage.
	ResolveEpoch func(ctx context.Context, src EpochSource) (*time.Time, error)
	// ContextEpoch is the build context's time, SOURCE_DATE_EPOCH=context:
	// a Git context's commit time, an HTTP context's Last-Modified or
	// newest archived file; nil for a local directory (no epoch).
	ContextEpoch *time.Time
	// Lint evaluates the lint rules buildkit's frontend runs while it
	// converts a Dockerfile (parser.Lint's Linter, whose warnings its Lint
	// collects): on every FROM line, on the base images, and on the
	// instructions of every planned stage. Nil evaluates none.
	Lint *linter.Linter
	// AllStages plans every stage, not only those the target needs, as
	// buildkit does for a check (--call check without --target); Plan
	// then holds them all. Stages a directory context replaces stay out.
	AllStages bool
	// IgnorePatterns are the build context's .dockerignore patterns, for
	// the lint rule CopyIgnoredFile.
	IgnorePatterns []string
}

// Plan is the stages needed to build the target, dependencies first.
type Plan struct {
	Stages []*Stage // topological order; Stages[len-1] is the target
	Target *Stage
	// StageCount is the number of stages in the Dockerfile, built or not.
	StageCount int
	// UnusedBuildArgs lists --build-arg keys no stage consumed (a warning).
	UnusedBuildArgs []string
	// Outline is what the build needs from its user (--call outline).
	Outline *Outline
	// SourceDateEpoch is the build's SOURCE_DATE_EPOCH (--build-arg or
	// the Dockerfile's global ARG), nil when unset.
	SourceDateEpoch *time.Time
}

// Stage is one FROM section of the Dockerfile.
type Stage struct {
	Index int    // position among all stages of the Dockerfile
	Name  string // "AS name", lower-cased; empty when unnamed
	Line  int    // line of the FROM instruction
	Text  string // original source of the FROM instruction
	Base  Source
	// Replaced is a stage a named context (--build-context NAME=...)
	// replaced: none of its instructions are planned.
	Replaced bool
	// FromContext: the stage's base is a named context (FROM NAME with
	// --build-context NAME=...), whichever Base it gives.
	FromContext bool
	// ImageContext is the named context (docker-image:// or oci-layout://)
	// that gave the stage its base image, when one did (FromContext or
	// Replaced): BuildKit names an oci-layout image after the context.
	ImageContext *NamedContext
	Platform     v1.Platform
	Steps        []*Step
	DependsOn    []int // indexes (Stage.Index) of stages this one needs
}

// Source is a source of files, resolved once by the planner: what a stage
// starts FROM, what COPY --from and RUN --mount from= read. It is scratch,
// an earlier stage, an image or a named local directory context.
type Source struct {
	Scratch bool
	Stage   *Stage     // an earlier stage
	Image   *ImageInfo // an image
	// Context is a named local directory context: a stage FROM one
	// starts from its files.
	Context *NamedContext
}

// Step is one instruction with its variables expanded.
type Step struct {
	Line, EndLine int    // 1-based source lines of the instruction
	Text          string // original source text (for errors and history)
	// Name is the step's progress text as BuildKit names its vertex
	// (stepName), without the "[stage i/n]" prefix; empty for the
	// instructions that make no vertex (they only change the config).
	Name string
	Cmd  instructions.Command // expanded copy of the parsed command
	// Env is the stage's environment before this step: base image env plus
	// ENV instructions so far, "K=V" in image-config order.
	Env []string
	// Args are the build args in scope before this step with their values,
	// "K=V" in declaration order (predefined platform args included once
	// declared). RUN sees them in its environment unless Env sets the same key.
	Args []string
	// ArgNames are the build args declared in scope before this step, in
	// declaration order, with a value or without: the args BuildKit names
	// in a RUN's history ("|N K=V ..."; no proxy args).
	ArgNames []string
	// From is the source of COPY --from: an earlier stage, an image or a
	// named directory context. Nil for the build context.
	From *Source
	// MountFrom maps the from= value of each RUN --mount that has one to
	// the source it names. Nil for other steps.
	MountFrom map[string]Source
	// OnBuild is true for a trigger inherited from the base image's ONBUILD.
	OnBuild bool
}
