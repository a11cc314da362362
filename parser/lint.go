package parser

import (
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/buildkit/util/suggest"
)

// LintOptions configure Lint.
type LintOptions struct {
	// Check replaces the "# check=" directive when not empty (buildkit's
	// BUILDKIT_DOCKERFILE_CHECK build arg): "skip=Rule,...|all;
	// error=true|false;experimental=Rule,...|all".
	Check string
}

// LintResult is what Lint found.
type LintResult struct {
	// Warnings in source order (then by rule name), as buildkit reports
	// them when it checks a Dockerfile: rule name, message and the line
	// of the instruction.
	Warnings []Warning
	// Fail is true when the check configuration says error=true and
	// there is at least one warning: the check must fail.
	Fail bool
}

// predefinedArgKeys are the ARGs buildkit defines before the meta ARGs
// (dockerfile2llb defaultArgs); a FROM may use them without declaring.
var predefinedArgKeys = []string{
	"BUILDPLATFORM", "BUILDOS", "BUILDOSVERSION", "BUILDARCH", "BUILDVARIANT",
	"TARGETPLATFORM", "TARGETOS", "TARGETOSVERSION", "TARGETARCH", "TARGETVARIANT", "TARGETSTAGE",
}

// secretKey and allowKey are buildkit's SecretsUsedInArgOrEnv patterns.
var (
	secretKey = regexp.MustCompile(`(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)`)
	allowKey  = regexp.MustCompile(`(?i)(?:_|^)(?:public|file|version)(?:_|$)`)
)

// Lint evaluates buildkit's Dockerfile lint rules on df without building:
// those buildkit reports while parsing (NoEmptyContinuation,
// MaintainerDeprecated, StageNameCasing, FromAsCasing) and those its
// frontend evaluates over all stages (ConsistentInstructionCasing,
// DuplicateStageName, ReservedStageName, UndefinedArgInFrom,
// InvalidDefaultArgInFrom, WorkdirRelativePath, JSONArgsRecommended,
// LegacyKeyValueFormat, SecretsUsedInArgOrEnv,
// MultipleInstructionsDisallowed). The "# check=" directive (or
// opts.Check) and "# check=" comments above an instruction skip rules or
// make warnings fatal, as in buildkit. Rules that need the base image's
// config (UndefinedVar, InvalidBaseImagePlatform) are not evaluated.
func (df *Dockerfile) Lint(opts LintOptions) (*LintResult, error) {
	check := df.Check
	if opts.Check != "" {
		check = opts.Check
	}
	cfg, err := linter.ParseLintOptions(check)
	if err != nil {
		return nil, &Error{Path: df.Path, Err: fmt.Errorf("parse check options %q: %w", check, err)}
	}
	res := &LintResult{}
	cfg.Warn = func(rule, _, _, msg string, loc []bkparser.Range) {
		res.Warnings = append(res.Warnings, Warning{Line: rangeLine(loc), Rule: rule, Message: msg})
	}
	lint := linter.New(cfg)
	df.lintParse(lint)
	lintStageNames(df.Stages, lint)
	lintCasing(df.Stages, lint)
	df.lintFromArgs(lint)
	lintStages(df.Stages, lint)
	slices.SortStableFunc(res.Warnings, func(a, b Warning) int { return a.Line - b.Line })
	res.Fail = cfg.ReturnAsError && len(res.Warnings) > 0
	return res, nil
}

// lintParse runs the rules buildkit evaluates while parsing: the
// scanner's empty continuation lines, and instruction parsing again with
// the configured linter (df.Warnings were collected without a config).
func (df *Dockerfile) lintParse(lint *linter.Linter) {
	for _, w := range df.Warnings {
		if w.Rule == linter.RuleNoEmptyContinuation.Name {
			pos := bkparser.Position{Line: w.Line}
			lint.Run(&linter.RuleNoEmptyContinuation, []bkparser.Range{{Start: pos, End: pos}}, linter.RuleNoEmptyContinuation.Format())
		}
	}
	for _, n := range df.Nodes {
		// Parse succeeded on these nodes already; only the warnings matter.
		_, _ = instructions.ParseInstructionWithLinter(n, lint)
	}
}

// lintStageNames is buildkit's validateStageNames.
func lintStageNames(stages []instructions.Stage, lint *linter.Linter) {
	seen := map[string]bool{}
	for _, st := range stages {
		if st.Name == "" {
			continue
		}
		if st.Name == "context" || st.Name == "scratch" {
			lint.Run(&linter.RuleReservedStageName, st.Location, linter.RuleReservedStageName.Format(st.Name))
		}
		if seen[st.Name] {
			lint.Run(&linter.RuleDuplicateStageName, st.Location, linter.RuleDuplicateStageName.Format(st.Name))
		}
		seen[st.Name] = true
	}
}

// lintCasing is buildkit's validateCommandCasing: every instruction
// keyword is all lower or all upper case, matching the majority.
func lintCasing(stages []instructions.Stage, lint *linter.Linter) {
	var lower, upper int
	count := func(s string) {
		switch s {
		case strings.ToLower(s):
			lower++
		case strings.ToUpper(s):
			upper++
		}
	}
	for _, st := range stages {
		count(st.OrigCmd)
		for _, c := range st.Commands {
			count(c.Name())
		}
	}
	majorityLower := lower > upper
	check := func(s string, loc []bkparser.Range) {
		want := ""
		if majorityLower && strings.ToLower(s) != s {
			want = "lowercase"
		} else if !majorityLower && strings.ToUpper(s) != s {
			want = "uppercase"
		}
		if want != "" {
			lint.Run(&linter.RuleConsistentInstructionCasing, loc, linter.RuleConsistentInstructionCasing.Format(s, want))
		}
	}
	for _, st := range stages {
		check(st.OrigCmd, st.Location)
		for _, c := range st.Commands {
			check(c.Name(), c.Location())
		}
	}
}

// lintFromArgs checks the variables of FROM lines: each must be a declared
// meta ARG or a predefined one (UndefinedArgInFrom), and with only the
// ARGs' defaults the base name must be a valid reference
// (InvalidDefaultArgInFrom).
func (df *Dockerfile) lintFromArgs(lint *linter.Linter) {
	lex := shell.NewLex(df.escape())
	defaults := &lintScope{vars: lintEnv{}}
	declared := slices.Clone(predefinedArgKeys)
	for _, k := range predefinedArgKeys {
		defaults.vars[k] = ""
	}
	for _, a := range df.MetaArgs {
		for _, kv := range a.Args {
			declared = append(declared, kv.Key)
			if kv.Value != nil {
				v, _, err := lex.ProcessWord(*kv.Value, defaults)
				if err != nil || defaults.spent() {
					return // the build fails on this ARG with a clearer error
				}
				defaults.vars[kv.Key] = v
			}
		}
	}
	for _, st := range df.Stages {
		for _, word := range []string{st.BaseName, st.Platform} {
			if word == "" {
				continue
			}
			res, err := lex.ProcessWordWithMatches(word, lintEnv{})
			if err != nil {
				continue
			}
			for _, v := range slices.Sorted(maps.Keys(res.Unmatched)) {
				if !slices.Contains(declared, v) {
					s, _ := suggest.Search(v, declared, true)
					lint.Run(&linter.RuleUndefinedArgInFrom, st.Location, linter.RuleUndefinedArgInFrom.Format(v, s))
				}
			}
		}
		res, err := lex.ProcessWordWithMatches(st.BaseName, defaults)
		if defaults.spent() {
			return
		}
		if err != nil {
			continue
		}
		if _, err := name.ParseReference(res.Result); err != nil && res.Result != "scratch" {
			lint.Run(&linter.RuleInvalidDefaultArgInFrom, st.Location, linter.RuleInvalidDefaultArgInFrom.Format(st.BaseName))
		}
	}
}

// stageLint is what the per-stage rules carry from a stage to the stages
// built FROM it.
type stageLint struct {
	workdirSet, shellSet bool
}

// lintStages runs the rules buildkit evaluates while dispatching each
// instruction, over every stage (a check has no target).
func lintStages(stages []instructions.Stage, lint *linter.Linter) {
	byName := map[string]stageLint{}
	for _, st := range stages {
		state := byName[strings.ToLower(st.BaseName)] // zero for images and scratch
		used := map[string][]bkparser.Range{}
		for _, c := range st.Commands {
			l := lint.WithMergedConfigFromComments(c.Comments())
			lintCommand(c, l, &state, used)
		}
		if st.Name != "" {
			byName[st.Name] = state
		}
	}
}

func lintCommand(c instructions.Command, lint *linter.Linter, state *stageLint, used map[string][]bkparser.Range) {
	switch c := c.(type) {
	case *instructions.WorkdirCommand:
		if !state.workdirSet && !path.IsAbs(c.Path) && !strings.HasPrefix(c.Path, "$") {
			lint.Run(&linter.RuleWorkdirRelativePath, c.Location(), linter.RuleWorkdirRelativePath.Format(c.Path))
		}
		state.workdirSet = true
	case *instructions.ShellCommand:
		state.shellSet = true
	case *instructions.CmdCommand:
		lintUsedOnce(c, lint, used)
		lintJSONArgs(c, c.PrependShell, lint, state)
	case *instructions.EntrypointCommand:
		lintUsedOnce(c, lint, used)
		lintJSONArgs(c, c.PrependShell, lint, state)
	case *instructions.HealthCheckCommand:
		lintUsedOnce(c, lint, used)
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
	case *instructions.ArgCommand:
		for _, kv := range c.Args {
			lintSecretKey("ARG", kv.Key, c.Location(), lint)
		}
	}
}

// lintJSONArgs reports a shell-form CMD or ENTRYPOINT unless a SHELL
// instruction set the shell (buildkit checks the image's Shell).
func lintJSONArgs(c instructions.Command, prependShell bool, lint *linter.Linter, state *stageLint) {
	if prependShell && !state.shellSet {
		lint.Run(&linter.RuleJSONArgsRecommended, c.Location(), linter.RuleJSONArgsRecommended.Format(c.Name()))
	}
}

// lintUsedOnce reports the earlier of two CMD, ENTRYPOINT or HEALTHCHECK
// in a stage: it is the one that has no effect.
func lintUsedOnce(c instructions.Command, lint *linter.Linter, used map[string][]bkparser.Range) {
	key := strings.ToLower(c.Name())
	if loc, ok := used[key]; ok {
		lint.Run(&linter.RuleMultipleInstructionsDisallowed, loc, linter.RuleMultipleInstructionsDisallowed.Format(c.Name()))
	}
	used[key] = c.Location()
}

func lintSecretKey(instruction, key string, loc []bkparser.Range, lint *linter.Linter) {
	if secretKey.MatchString(key) && !allowKey.MatchString(key) {
		lint.Run(&linter.RuleSecretsUsedInArgOrEnv, loc, linter.RuleSecretsUsedInArgOrEnv.Format(instruction, key))
	}
}

func (df *Dockerfile) escape() rune {
	if df.Escape == 0 {
		return '\\'
	}
	return df.Escape
}

// lintEnv is a shell.EnvGetter over a map.
type lintEnv map[string]string

func (e lintEnv) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }

func (e lintEnv) Keys() []string { return slices.Sorted(maps.Keys(e)) }

// maxLintExpansion bounds the bytes the meta ARGs' references expand to
// while linting: "ARG A=$A$A" lines double a value at every line.
const maxLintExpansion = 16 << 20

// lintScope is a lintEnv that counts the bytes its values expand to and
// expands to nothing once maxLintExpansion is spent.
type lintScope struct {
	vars lintEnv
	used int64
}

func (s *lintScope) Get(k string) (string, bool) {
	v, ok := s.vars[k]
	s.used += int64(len(v))
	if s.spent() {
		return "", ok
	}
	return v, ok
}

func (s *lintScope) Keys() []string { return s.vars.Keys() }

func (s *lintScope) spent() bool { return s.used > maxLintExpansion }
