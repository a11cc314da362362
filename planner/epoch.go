package planner

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/builder-dev/builder/parser"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// epochArg is the build arg that sets the build's timestamps.
const epochArg = "SOURCE_DATE_EPOCH"

// EpochSource is the remote file of a SOURCE_DATE_EPOCH stage: the
// build's epoch is its time (Options.ResolveEpoch).
type EpochSource struct {
	Stage    string // the stage's name, as SOURCE_DATE_EPOCH names it
	URL      string // the stage's one http(s) ADD source, expanded
	Checksum string // its --checksum, expanded ("" for none)
}

// sourceDateEpoch resolves SOURCE_DATE_EPOCH as BuildKit's Dockerfile
// frontend does: the --build-arg, else the global ARG's non-empty value,
// is a number of seconds, "context" (the local context has no time: no
// epoch), a named build context (local directories and images have no
// time either), or the name of a stage that only fetches one remote file
// (ADD of an http(s) URL, with ARGs). Anything else is an error. The
// resolved value (or nothing) then replaces SOURCE_DATE_EPOCH in the
// build args and the global scope.
func (p *planner) sourceDateEpoch(ctx context.Context) (*time.Time, error) {
	v, given := p.buildArg(epochArg)
	if !given {
		v, _ = p.global.get(epochArg)
	}
	if !given && v == "" {
		return nil, nil
	}
	var tm *time.Time
	if v != "" {
		var err error
		if tm, err = p.resolveEpoch(ctx, v); err != nil {
			return nil, err
		}
	}
	value := ""
	if tm != nil {
		value = strconv.FormatInt(tm.Unix(), 10)
	}
	p.setEpochArg(value)
	return tm, nil
}

func (p *planner) resolveEpoch(ctx context.Context, v string) (*time.Time, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		tm := time.Unix(n, 0).UTC()
		return &tm, nil
	}
	if v == "context" {
		return p.opts.ContextEpoch, nil
	}
	if nc := p.namedContext(v); nc != nil {
		return nc.Epoch, nil
	}
	for i := range p.df.Stages {
		if !strings.EqualFold(p.df.Stages[i].Name, v) {
			continue
		}
		src, err := p.epochStage(&p.df.Stages[i])
		if err != nil {
			line, _ := parser.Span(p.df.Stages[i].Location)
			return nil, p.errAt(line, err)
		}
		if p.opts.ResolveEpoch == nil {
			return nil, fmt.Errorf("SOURCE_DATE_EPOCH stage %s: no resolver for %s", src.Stage, src.URL)
		}
		tm, err := p.opts.ResolveEpoch(ctx, src)
		if err != nil {
			return nil, fmt.Errorf("SOURCE_DATE_EPOCH stage %s: %w", src.Stage, err)
		}
		return tm, nil
	}
	return nil, fmt.Errorf("invalid SOURCE_DATE_EPOCH: %s", v)
}

// setEpochArg replaces SOURCE_DATE_EPOCH where it is set (build args,
// global scope) by value, or removes it when value is empty.
func (p *planner) setEpochArg(value string) {
	if _, ok := p.opts.BuildArgs[epochArg]; ok {
		if value == "" {
			delete(p.opts.BuildArgs, epochArg)
		} else {
			p.opts.BuildArgs[epochArg] = &value
		}
	}
	if _, ok := p.global.get(epochArg); ok {
		if value == "" {
			p.global = p.global.remove(epochArg)
		} else {
			p.global = p.global.set(epochArg, &value)
		}
	}
}

// epochStage checks BuildKit's requirements for a SOURCE_DATE_EPOCH stage
// and returns its source: FROM scratch, then only ARGs and exactly one ADD
// of one remote source.
func (p *planner) epochStage(st *instructions.Stage) (EpochSource, error) {
	scope := p.global.remove(epochArg)
	base, _, err := p.lex.ProcessWord(st.BaseName, newLookup(nil, scope))
	if err != nil {
		return EpochSource{}, fmt.Errorf("failed to process source stage base name %q: %w", st.BaseName, err)
	}
	if base != "scratch" {
		return EpochSource{}, errors.New("SOURCE_DATE_EPOCH stage must use FROM scratch")
	}
	var src *EpochSource
	for _, c := range st.Commands {
		switch c := c.(type) {
		case *instructions.ArgCommand:
			if scope, err = p.epochStageArgs(c, scope); err != nil {
				return EpochSource{}, err
			}
		case *instructions.AddCommand:
			if src != nil {
				return EpochSource{}, errors.New("SOURCE_DATE_EPOCH stage must contain exactly one remote ADD")
			}
			s, err := p.epochAdd(c, scope)
			if err != nil {
				return EpochSource{}, err
			}
			s.Stage = st.Name
			src = &s
		default:
			return EpochSource{}, fmt.Errorf("SOURCE_DATE_EPOCH stage does not meet source-only requirements: unsupported %s instruction", c.Name())
		}
	}
	if src == nil {
		return EpochSource{}, errors.New("SOURCE_DATE_EPOCH stage must contain exactly one remote ADD")
	}
	return *src, nil
}

// epochStageArgs adds a SOURCE_DATE_EPOCH stage's ARGs to its scope: a
// --build-arg, else the expanded default.
func (p *planner) epochStageArgs(c *instructions.ArgCommand, scope args) (args, error) {
	for _, kv := range c.Args {
		if v, ok := p.buildArg(kv.Key); ok {
			scope = scope.set(kv.Key, &v)
			continue
		}
		if kv.Value == nil {
			continue
		}
		v, _, err := p.lex.ProcessWord(*kv.Value, newLookup(nil, scope))
		if err != nil {
			return nil, err
		}
		scope = scope.set(kv.Key, &v)
	}
	return scope, nil
}

// epochAdd returns the remote source of a SOURCE_DATE_EPOCH stage's ADD.
// BuildKit also takes a Git source (the commit's time); builder's ADD
// cannot fetch Git repositories, so it says so.
func (p *planner) epochAdd(c *instructions.AddCommand, scope args) (EpochSource, error) {
	if len(c.SourceContents) != 0 || len(c.SourcePaths) != 1 {
		return EpochSource{}, errors.New("SOURCE_DATE_EPOCH stage must contain exactly one remote ADD source")
	}
	word := func(w string) (string, error) {
		s, _, err := p.lex.ProcessWord(w, newLookup(nil, scope))
		return s, err
	}
	src, err := word(c.SourcePaths[0])
	if err != nil {
		return EpochSource{}, err
	}
	if isGitSource(src) {
		return EpochSource{}, fmt.Errorf("SOURCE_DATE_EPOCH stage source %s: Git sources are not supported by builder (ADD cannot fetch Git repositories)", src)
	}
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		sum, err := word(c.Checksum)
		if err != nil {
			return EpochSource{}, err
		}
		return EpochSource{URL: src, Checksum: sum}, nil
	}
	return EpochSource{}, errors.New("SOURCE_DATE_EPOCH stage source must be a single HTTP(S) or Git ADD")
}

// isGitSource reports whether an ADD source is a Git repository in the
// forms BuildKit recognizes: git@host:path, git:// and ssh:// URLs, and
// http(s) URLs whose path ends in ".git" (a "#ref" fragment may follow).
func isGitSource(src string) bool {
	for _, p := range []string{"git@", "git://", "ssh://"} {
		if strings.HasPrefix(src, p) {
			return true
		}
	}
	if !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		return false
	}
	u, err := url.Parse(src)
	return err == nil && strings.HasSuffix(u.Path, ".git")
}
