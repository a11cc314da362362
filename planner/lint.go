package planner

import (
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	cplatforms "github.com/containerd/platforms"
	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/util/suggest"
	"github.com/moby/buildkit/util/system"
	"github.com/moby/patternmatcher"
)

// This file holds the lint rules buildkit's Dockerfile frontend evaluates
// while it converts a Dockerfile for a build: on every FROM line, on the
// base images it resolves, and on the instructions of the stages it
// dispatches (those the target needs, every stage for a check). They run
// through Options.Lint, configured (skip, error, experimental, per
// instruction "# check=" comments) as buildkit's linter.

// lintFor returns the linter for an instruction or stage preceded by
// comments ("# check=" comments merge into the configuration), or nil
// when the plan has no lint.
func (p *planner) lintFor(comments []string) *linter.Linter {
	if p.opts.Lint == nil {
		return nil
	}
	return p.opts.Lint.WithMergedConfigFromComments(comments)
}

// nonEnvArgs are build args buildkit never puts in a stage's environment
// and never reports as undefined.
var nonEnvArgs = []string{"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"}

// lintDefaultBaseNames is buildkit's validateBaseImagesWithDefaultArgs:
// with the predefined args and the meta ARGs' defaults only (no
// --build-arg for them), every FROM must still name a valid reference
// (InvalidDefaultArgInFrom). It gives up silently where expansion fails:
// planning then fails with the error.
func (p *planner) lintDefaultBaseNames(targetName string) {
	if p.opts.Lint == nil {
		return
	}
	var defaults args
	for _, kv := range predefinedArgs(p.target, p.build, targetName) {
		v := kv[1]
		if bv, ok := p.buildArg(kv[0]); ok {
			v = bv
		}
		defaults = defaults.set(kv[0], &v)
	}
	for _, cmd := range p.df.MetaArgs {
		for _, kv := range cmd.Args {
			if kv.Value == nil {
				continue
			}
			v, err := p.lex.ProcessWordWithMatches(*kv.Value, p.lookup(nil, defaults))
			if err != nil || p.budget.exceeded() != nil {
				return
			}
			defaults = defaults.set(kv.Key, &v.Result)
		}
	}
	for i := range p.df.Stages {
		st := &p.df.Stages[i]
		res, err := p.lex.ProcessWordWithMatches(st.BaseName, p.lookup(nil, defaults))
		if err != nil || p.budget.exceeded() != nil {
			return
		}
		if _, err := reference.ParseNormalizedNamed(res.Result); err != nil {
			p.opts.Lint.Run(&linter.RuleInvalidDefaultArgInFrom, st.Location, linter.RuleInvalidDefaultArgInFrom.Format(st.BaseName))
		}
	}
}

// lintFrom runs the rules buildkit evaluates on every FROM line while it
// sets the stages up, in its order: UndefinedArgInFrom for the base name,
// then for --platform UndefinedArgInFrom, RedundantTargetPlatform and
// FromPlatformFlagConstDisallowed. Expansion errors are left to
// setupBase, which fails on them.
func (p *planner) lintFrom(src *instructions.Stage) {
	lint := p.lintFor(src.Comments)
	if lint == nil {
		return
	}
	declared := p.fromArgKeys()
	res, err := p.lex.ProcessWordWithMatches(src.BaseName, p.lookup(nil, p.global))
	if p.budget.exceeded() != nil {
		return
	}
	lintUndefinedArgInFrom(res.Unmatched, declared, src.Location, lint)
	if err != nil || src.Platform == "" {
		return
	}
	res, _ = p.lex.ProcessWordWithMatches(src.Platform, p.lookup(nil, p.global))
	if p.budget.exceeded() != nil {
		return
	}
	lintUndefinedArgInFrom(res.Unmatched, declared, src.Location, lint)
	if len(res.Matched) == 1 && len(res.Unmatched) == 0 {
		_, target := res.Matched["TARGETPLATFORM"]
		if v, _ := p.global.get("TARGETPLATFORM"); target && res.Result == v {
			lint.Run(&linter.RuleRedundantTargetPlatform, src.Location, linter.RuleRedundantTargetPlatform.Format(src.Platform))
		}
	}
	if len(res.Matched) > 0 || len(res.Unmatched) > 0 {
		return // not a constant
	}
	pl, err := cplatforms.Parse(res.Result)
	if err != nil || strings.Contains(src.Name, pl.OS) || strings.Contains(src.Name, pl.Architecture) {
		return // fails later, or the stage is named for its platform
	}
	lint.Run(&linter.RuleFromPlatformFlagConstDisallowed, src.Location, linter.RuleFromPlatformFlagConstDisallowed.Format(res.Result))
}

// fromArgKeys are the args a FROM line may use: the predefined ones and
// every meta ARG, with or without a value, sorted (buildkit's order is a
// map's, which only matters for ties between suggestions).
func (p *planner) fromArgKeys() []string {
	keys := map[string]bool{}
	for _, a := range p.global {
		keys[a.key] = true
	}
	for _, cmd := range p.df.MetaArgs {
		for _, kv := range cmd.Args {
			keys[kv.Key] = true
		}
	}
	return slices.Sorted(maps.Keys(keys))
}

func lintUndefinedArgInFrom(unmatched map[string]struct{}, declared []string, loc []bkparser.Range, lint *linter.Linter) {
	for _, v := range slices.Sorted(maps.Keys(unmatched)) {
		if slices.Contains(declared, v) {
			continue
		}
		s, _ := suggest.Search(v, declared, true)
		lint.Run(&linter.RuleUndefinedArgInFrom, loc, linter.RuleUndefinedArgInFrom.Format(v, s))
	}
}

// lintBasePlatform is buildkit's InvalidBaseImagePlatform: a base image
// (not one without layers, which buildkit treats as scratch) whose
// os/architecture is not the stage's platform.
func (p *planner) lintBasePlatform(si *stageInfo, img *ImageInfo) {
	cfg := img.Config
	if p.opts.Lint == nil || si.st.Replaced || si.st.FromContext || isEmptyImage(cfg) {
		return
	}
	want := si.st.Platform
	if cfg.OS == want.OS && cfg.Architecture == want.Architecture {
		return
	}
	got := cplatforms.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant, OSVersion: cfg.OSVersion}
	msg := linter.RuleInvalidBaseImagePlatform.Format(si.baseName, formatAll(ociPlatform(want)), formatAll(got))
	p.opts.Lint.Run(&linter.RuleInvalidBaseImagePlatform, si.src.Location, msg)
}

func ociPlatform(p v1.Platform) cplatforms.Platform {
	return cplatforms.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant, OSVersion: p.OSVersion}
}

func formatAll(p cplatforms.Platform) string { return cplatforms.FormatAll(cplatforms.Normalize(p)) }

// isEmptyImage is buildkit's test for an image it builds on as scratch:
// no layers, and no history entry that made one.
func isEmptyImage(cfg *v1.ConfigFile) bool {
	if len(cfg.RootFS.DiffIDs) > 0 {
		return false
	}
	for _, h := range cfg.History {
		if !h.EmptyLayer {
			return false
		}
	}
	return true
}

// stageLint is what buildkit's dispatch tracks per stage for its rules:
// the last CMD, ENTRYPOINT and HEALTHCHECK (MultipleInstructionsDisallowed
// reports the earlier one, which has no effect).
type stageLint struct {
	used map[string][]bkparser.Range
}

// lintStep runs the rules buildkit evaluates when it dispatches the
// (expanded) command c in scope sc, before c changes the scope.
func (p *planner) lintStep(lint *linter.Linter, sc *scope, sl *stageLint, c instructions.Command, os string) {
	if lint == nil {
		return
	}
	switch c := c.(type) {
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			if kv.NoDelim {
				lint.Run(&linter.RuleLegacyKeyValueFormat, c.Location(), linter.RuleLegacyKeyValueFormat.Format(c.Name()))
			}
			lintSecretKey("ENV", kv.Key, c.Location(), lint)
		}
	case *instructions.LabelCommand:
		for _, kv := range c.Labels {
			if kv.NoDelim {
				lint.Run(&linter.RuleLegacyKeyValueFormat, c.Location(), linter.RuleLegacyKeyValueFormat.Format(c.Name()))
			}
		}
	case *instructions.WorkdirCommand:
		if !sc.workdirSet && !system.IsAbs(c.Path, os) {
			lint.Run(&linter.RuleWorkdirRelativePath, c.Location(), linter.RuleWorkdirRelativePath.Format(c.Path))
		}
	case *instructions.CmdCommand:
		sl.usedOnce(c, lint)
		lintJSONArgs(c, c.PrependShell, sc, lint)
	case *instructions.EntrypointCommand:
		sl.usedOnce(c, lint)
		lintJSONArgs(c, c.PrependShell, sc, lint)
	case *instructions.HealthCheckCommand:
		sl.usedOnce(c, lint)
	case *instructions.ExposeCommand:
		lintPorts(c, lint)
	case *instructions.CopyCommand:
		if c.From == "" {
			p.lintIgnored("Copy", c.SourcePaths, c.Location(), lint)
		}
	case *instructions.AddCommand:
		p.lintIgnored("Add", c.SourcePaths, c.Location(), lint)
	}
}

// usedOnce reports the earlier of two CMD, ENTRYPOINT or HEALTHCHECK in a
// stage.
func (sl *stageLint) usedOnce(c instructions.Command, lint *linter.Linter) {
	key := strings.ToLower(c.Name())
	if loc, ok := sl.used[key]; ok {
		lint.Run(&linter.RuleMultipleInstructionsDisallowed, loc, linter.RuleMultipleInstructionsDisallowed.Format(c.Name()))
	}
	sl.used[key] = c.Location()
}

// lintJSONArgs reports a shell-form CMD or ENTRYPOINT unless the image
// config has a shell (SHELL, here or in the base image or stage).
func lintJSONArgs(c instructions.Command, prependShell bool, sc *scope, lint *linter.Linter) {
	if prependShell && !sc.shellSet {
		lint.Run(&linter.RuleJSONArgsRecommended, c.Location(), linter.RuleJSONArgsRecommended.Format(c.Name()))
	}
}

// secretKey and allowKey are buildkit's SecretsUsedInArgOrEnv patterns.
var (
	secretKey = regexp.MustCompile(`(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)`)
	allowKey  = regexp.MustCompile(`(?i)(?:_|^)(?:public|file|version)(?:_|$)`)
)

func lintSecretKey(instruction, key string, loc []bkparser.Range, lint *linter.Linter) {
	if secretKey.MatchString(key) && !allowKey.MatchString(key) {
		lint.Run(&linter.RuleSecretsUsedInArgOrEnv, loc, linter.RuleSecretsUsedInArgOrEnv.Format(instruction, key))
	}
}

// lintPorts runs ExposeProtoCasing and ExposeInvalidFormat on each
// (expanded) port of an EXPOSE, "[ip:][hostPort:]port[/proto]", in
// buildkit's order; it stops at a port without a number or with an
// unknown protocol, on which the build fails.
func lintPorts(c *instructions.ExposeCommand, lint *linter.Linter) {
	for _, raw := range c.Ports {
		ip, hostPort, port := splitPort(raw)
		num, proto, _ := strings.Cut(port, "/")
		if num == "" || !slices.Contains([]string{"", "tcp", "udp", "sctp"}, strings.ToLower(proto)) {
			return
		}
		if proto != strings.ToLower(proto) {
			lint.Run(&linter.RuleExposeProtoCasing, c.Location(), linter.RuleExposeProtoCasing.Format(raw))
		}
		if ip != "" || hostPort != "" {
			lint.Run(&linter.RuleExposeInvalidFormat, c.Location(), linter.RuleExposeInvalidFormat.Format(raw))
		}
	}
}

// splitPort splits "[ip:][hostPort:]port" at its last two colons (an IPv6
// address keeps its own).
func splitPort(raw string) (ip, hostPort, port string) {
	parts := strings.Split(raw, ":")
	n := len(parts)
	switch n {
	case 1:
		return "", "", parts[0]
	case 2:
		return "", parts[0], parts[1]
	default:
		return strings.Join(parts[:n-2], ":"), parts[n-2], parts[n-1]
	}
}

// scpGitURL is a git remote in scp form ("git@github.com:org/repo.git").
var scpGitURL = regexp.MustCompile(`^[A-Za-z0-9_-]+@[A-Za-z0-9.-]+:`)

// lintIgnored is buildkit's CopyIgnoredFile: a build context source that
// .dockerignore excludes (the COPY then fails: the file is not there).
// Like buildkit it checks nothing when a pattern re-includes files ("!"),
// and the context root only when a pattern excludes every entry.
func (p *planner) lintIgnored(cmd string, srcs []string, loc []bkparser.Range, lint *linter.Linter) {
	m := p.ignore
	if m == nil || m.Exclusions() {
		return
	}
	for _, src := range srcs {
		if strings.Contains(src, "://") || scpGitURL.MatchString(src) {
			continue // a URL or git remote, not the context
		}
		src = filepath.ToSlash(filepath.Clean(src))
		if (src == "." || src == "/") && !rootIgnored(m) {
			continue
		}
		if ok, err := m.MatchesOrParentMatches(src); err == nil && ok {
			lint.Run(&linter.RuleCopyIgnoredFile, loc, linter.RuleCopyIgnoredFile.Format(cmd, src))
		}
	}
}

func rootIgnored(m *patternmatcher.PatternMatcher) bool {
	for _, pat := range m.Patterns() {
		if pat.Exclusion() {
			continue
		}
		switch pat.String() {
		case "*", "**", "**/*":
			return true
		}
	}
	return false
}

// lintUnmatched is buildkit's UndefinedVar: a variable an instruction
// uses that is neither in the stage's environment nor a declared ARG,
// with the closest name in the environment as a suggestion.
func lintUnmatched(unmatched map[string]struct{}, sc *scope, loc []bkparser.Range, lint *linter.Linter) {
	if lint == nil {
		return
	}
	for _, v := range slices.Sorted(maps.Keys(unmatched)) {
		if slices.Contains(nonEnvArgs, v) || slices.ContainsFunc(sc.args, func(a arg) bool { return a.key == v }) {
			continue
		}
		s, _ := suggest.Search(v, sc.keys(), true)
		lint.Run(&linter.RuleUndefinedVar, loc, linter.RuleUndefinedVar.Format(v, s))
	}
}
