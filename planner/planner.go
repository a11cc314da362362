package planner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/builder-dev/builder/parser"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/buildkit/util/suggest"
	"github.com/moby/patternmatcher"
)

// planner holds the state of one New call. It is not safe for concurrent use.
type planner struct {
	df       *parser.Dockerfile
	opts     Options
	lex      *shell.Lex
	target   v1.Platform
	build    v1.Platform
	global   args            // meta ARGs and predefined platform args, for FROM lines
	declared map[string]bool // every ARG key declared by a meta ARG or a planned stage
	stages   []*stageInfo    // every stage of the Dockerfile, by index
	images   map[string]*ImageInfo
	budget   budget                         // of variable expansion, for the whole plan
	ignore   *patternmatcher.PatternMatcher // .dockerignore, for lint; nil without patterns
	outline  map[string]outlineArg          // the meta ARGs, for the outline
}

// stageInfo is what the planner knows about one stage before planning its steps.
type stageInfo struct {
	st        *Stage
	src       *instructions.Stage
	baseName  string // expanded FROM argument
	baseStage int    // index of the base stage, or -1
	deps      map[int]bool
	sources   map[instructions.Command][]sourceRef
	readers   map[int]int            // stage read by a command (COPY --from, mount from=) -> first such line
	triggers  []instructions.Command // ONBUILD triggers inserted before Commands
	triggered bool
	final     *scope // env and args after the last step
	// outline is the stage's part of the build's outline.
	outline *stageOutline
}

// sourceRef is a COPY --from or RUN --mount from= as written, before it
// is resolved to a Source: a stage, an image or a named context.
type sourceRef struct {
	key   string // the --from / from= value as written
	stage int    // -1 for an image
	image string
	dir   *NamedContext // a named local directory context
}

// New plans the build of df: it expands every FROM line, resolves base
// images through opts.ResolveImage (once per reference and platform),
// prunes the stages the target does not need, and expands each step.
// Errors are *parser.Error values naming the Dockerfile line. Variable
// references may expand to at most 16 MiB in all (maxExpansion): beyond,
// planning fails at the line that spent the budget.
func New(ctx context.Context, df *parser.Dockerfile, opts Options) (*Plan, error) {
	if df == nil || len(df.Stages) == 0 {
		return nil, errors.New("plan build: no stages")
	}
	if opts.ResolveImage == nil {
		opts.ResolveImage = noResolver
	}
	opts.BuildArgs = maps.Clone(opts.BuildArgs) // SOURCE_DATE_EPOCH's resolved value replaces the given one
	p := &planner{df: df, opts: opts, lex: shell.NewLex(df.Escape), declared: map[string]bool{}, images: map[string]*ImageInfo{}}
	if df.Escape == 0 {
		p.lex = shell.NewLex('\\')
	}
	p.target, p.build = platforms(opts)
	if len(opts.IgnorePatterns) > 0 {
		m, err := patternmatcher.New(opts.IgnorePatterns)
		if err != nil {
			return nil, p.errAt(0, fmt.Errorf(".dockerignore: %w", err))
		}
		p.ignore = m
	}
	target, err := p.findTarget()
	if err != nil {
		return nil, err
	}
	p.lintDefaultBaseNames(df.Stages[target].Name)
	if err := p.metaArgs(df.Stages[target].Name); err != nil {
		return nil, err
	}
	epoch, err := p.sourceDateEpoch(ctx)
	if err != nil {
		return nil, err
	}
	if err := p.setupStages(); err != nil {
		return nil, err
	}
	reach, err := p.resolve(ctx, target)
	if err != nil {
		return nil, err
	}
	plan, err := p.plan(ctx, reach, target)
	if err != nil {
		return nil, err
	}
	plan.SourceDateEpoch = epoch
	plan.Outline = p.buildOutline(target)
	return plan, nil
}

func noResolver(_ context.Context, ref string, _ v1.Platform) (*ImageInfo, error) {
	return nil, fmt.Errorf("no image resolver configured for %s", ref)
}

// lookup is the scope of one expansion, charged to the plan's budget.
func (p *planner) lookup(env *envList, a args) *lookup {
	l := newLookup(env, a)
	l.budget = &p.budget
	return l
}

// errAt returns a *parser.Error at line, naming opts.DockerfilePath if set.
func (p *planner) errAt(line int, err error) error {
	e := p.df.ErrorAt(line, err)
	if p.opts.DockerfilePath != "" {
		e.Path = p.opts.DockerfilePath
	}
	return e
}

func (p *planner) stageNames() []string {
	var names []string
	for _, s := range p.df.Stages {
		if s.Name != "" && !slices.Contains(names, s.Name) {
			names = append(names, s.Name)
		}
	}
	return names
}

// findTarget returns the index of the --target stage, the last stage by default.
func (p *planner) findTarget() (int, error) {
	if p.opts.Target == "" {
		return len(p.df.Stages) - 1, nil
	}
	if i := p.stageByName(p.opts.Target, len(p.df.Stages)); i >= 0 {
		return i, nil
	}
	names := p.stageNames()
	err := suggest.WrapError(fmt.Errorf("target stage %q could not be found", p.opts.Target), p.opts.Target, names, false)
	if len(names) == 0 {
		return 0, p.errAt(0, fmt.Errorf("%w; the Dockerfile has no named stages", err))
	}
	return 0, p.errAt(0, fmt.Errorf("%w; stages: %s", err, strings.Join(names, ", ")))
}

// stageByName returns the index of the last stage named name (case
// insensitive) among the first n stages, or -1.
func (p *planner) stageByName(name string, n int) int {
	for i := n - 1; i >= 0; i-- {
		if p.df.Stages[i].Name != "" && strings.EqualFold(p.df.Stages[i].Name, name) {
			return i
		}
	}
	return -1
}

// metaArgs fills the global scope: predefined platform args, then the ARGs
// before the first FROM, with --build-arg values overriding both.
func (p *planner) metaArgs(targetName string) error {
	for _, kv := range predefinedArgs(p.target, p.build, targetName) {
		v := kv[1]
		if bv, ok := p.buildArg(kv[0]); ok {
			v = bv
		}
		p.global = p.global.set(kv[0], &v)
	}
	for _, cmd := range p.df.MetaArgs {
		line, _ := parser.Span(cmd.Location())
		for _, kv := range cmd.Args {
			p.declared[kv.Key] = true
			var value *string
			var matched map[string]struct{}
			if bv, ok := p.buildArg(kv.Key); ok {
				value = &bv
			} else if kv.Value != nil {
				res, err := p.lex.ProcessWordWithMatches(*kv.Value, p.lookup(nil, p.global))
				if err == nil {
					err = p.budget.exceeded()
				}
				if err != nil {
					return p.errAt(line, fmt.Errorf("expand ARG %s: %w", kv.Key, err))
				}
				value, matched = &res.Result, res.Matched
			}
			p.metaArgOutline(cmd, kv, value, matched)
			if value != nil {
				p.global = p.global.set(kv.Key, value)
			}
		}
	}
	return nil
}

// buildArg returns the --build-arg value of key; nil values count as unset.
func (p *planner) buildArg(key string) (string, bool) {
	v, ok := p.opts.BuildArgs[key]
	if !ok || v == nil {
		return "", false
	}
	return *v, true
}

// unusedBuildArgs lists --build-arg keys that no ARG declared.
func (p *planner) unusedBuildArgs() []string {
	var out []string
	for k, v := range p.opts.BuildArgs {
		if v != nil && !p.declared[k] && !isPredefined(k, p.target, p.build) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// parseStageRef resolves a COPY --from / mount from= value seen in stage
// i: a stage name or (for COPY) index, else an image. As in BuildKit, a
// name means the last stage of that name in the whole Dockerfile, and a
// stage defined after i is an error only once i is built (laterSource).
func (p *planner) parseStageRef(i int, from string, allowIndex bool) (sourceRef, error) {
	if s, ok := p.contextRef(i, from, allowIndex); ok {
		return s, nil
	}
	if allowIndex {
		if n, err := strconv.Atoi(from); err == nil {
			if n < 0 || n >= len(p.df.Stages) {
				return sourceRef{}, fmt.Errorf("invalid stage index %d", n)
			}
			return sourceRef{key: from, stage: n}, nil
		}
	}
	if j := p.stageByName(from, len(p.df.Stages)); j >= 0 {
		return sourceRef{key: from, stage: j}, nil
	}
	return sourceRef{key: from, stage: -1, image: from}, nil
}

// displayName is the stage's name in BuildKit's messages: its AS name,
// else "stage-N" (empty in a one-stage Dockerfile).
func (p *planner) displayName(i int) string {
	if n := p.df.Stages[i].Name; n != "" {
		return n
	}
	if len(p.df.Stages) == 1 {
		return ""
	}
	return "stage-" + strconv.Itoa(i)
}
