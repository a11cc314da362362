package planner

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/builder-dev/builder/parser"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// scope is a stage's variables while its steps are planned.
type scope struct {
	env  *envList // image config env: base env plus ENV so far
	args args     // build args declared so far (inherited from a base stage)
	// argOver holds the keys of env whose value an ARG with a value set
	// after the ENV that set them: BuildKit adds an ARG's value to the
	// stage's environment, so that value wins over the ENV one until an
	// ENV sets the key again (the image config keeps the ENV value).
	argOver map[string]bool
	// keySeq holds the names buildkit's environment of the stage holds
	// (image env, ENV, ARG values) with when each was last set (seq):
	// keys() lists them most recently set last, the candidates, in
	// buildkit's order, of UndefinedVar's "did you mean". A map, so that
	// N ENV lines cost O(N).
	keySeq map[string]int
	seq    int
	// shellSet: the image config has a shell (base image, SHELL), for
	// JSONArgsRecommended.
	shellSet bool
	// workdirSet: a WORKDIR of this Dockerfile ran in the stage or the
	// stages it is built on, for WorkdirRelativePath.
	workdirSet bool
}

func (s *scope) clone() *scope {
	c := *s
	c.env, c.args, c.keySeq = s.env.clone(), slices.Clone(s.args), maps.Clone(s.keySeq)
	c.argOver = maps.Clone(s.argOver)
	return &c
}

// setArg records that an ARG gave key a value in the environment.
func (s *scope) setArg(key string) {
	if s.argOver == nil {
		s.argOver = map[string]bool{}
	}
	s.argOver[key] = true
	s.setKey(key)
}

// runEnv is the environment as BuildKit's state holds it: the image
// config env with the values of keys a later ARG set replaced.
func (s *scope) runEnv() []string {
	env := s.env.snapshot()
	if len(s.argOver) == 0 {
		return env
	}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if v, ok := s.args.get(k); ok && s.argOver[k] {
			kv = k + "=" + v
		}
		out = append(out, kv)
	}
	return out
}

// lookup is the variables of an expansion in the scope.
func (p *planner) scopeLookup(s *scope) *lookup {
	l := p.lookup(s.env, s.args)
	l.over = s.argOver
	return l
}

// setKey records that key was (re)set in the stage's environment.
func (s *scope) setKey(key string) {
	if s.keySeq == nil {
		s.keySeq = map[string]int{}
	}
	s.seq++
	s.keySeq[key] = s.seq
}

// keys lists the names of the stage's environment, most recently set last.
func (s *scope) keys() []string {
	return slices.SortedFunc(maps.Keys(s.keySeq), func(a, b string) int { return s.keySeq[a] - s.keySeq[b] })
}

// plan builds the Plan from the reachable stages, in index order.
func (p *planner) plan(ctx context.Context, reach []int, target int) (*Plan, error) {
	plan := &Plan{StageCount: len(p.stages)}
	for _, i := range reach {
		if err := p.planStage(ctx, p.stages[i]); err != nil {
			return nil, err
		}
		plan.Stages = append(plan.Stages, p.stages[i].st)
	}
	plan.Target = p.stages[target].st
	plan.UnusedBuildArgs = p.unusedBuildArgs()
	return plan, nil
}

func (p *planner) planStage(ctx context.Context, si *stageInfo) error {
	sc := p.initialScope(si)
	sl := &stageLint{used: map[string][]bkparser.Range{}}
	for d := range si.deps {
		si.st.DependsOn = append(si.st.DependsOn, d)
	}
	slices.Sort(si.st.DependsOn)
	for _, c := range si.triggers {
		if err := p.addStep(ctx, si, sc, sl, c, c); err != nil {
			return err
		}
	}
	for _, orig := range si.src.Commands {
		c, err := p.df.Reparse(orig)
		if err != nil {
			return err
		}
		if err := p.addStep(ctx, si, sc, sl, orig, c); err != nil {
			return err
		}
	}
	si.final = sc
	return nil
}

// initialScope is the env and args a stage starts with: its base stage's
// final ones, or the base image's env; PATH is always set (BuildKit).
func (p *planner) initialScope(si *stageInfo) *scope {
	var sc *scope
	switch {
	case si.baseStage >= 0:
		base := p.stages[si.baseStage]
		si.st.Base.Stage = base.st
		si.st.Platform = base.st.Platform
		sc = base.final.clone()
		// BuildKit sets the image env again on the base stage's state:
		// an ENV value wins over an ARG's set after it in the base stage
		// (args without an ENV keep their values).
		sc.argOver = nil
	case si.st.Base.Image != nil:
		cfg := si.st.Base.Image.Config.Config
		sc = &scope{env: newEnvList(cfg.Env), shellSet: len(cfg.Shell) > 0}
	default:
		sc = &scope{env: newEnvList(nil)}
	}
	if _, ok := sc.env.get("PATH"); !ok && si.st.Platform.OS != "windows" {
		sc.env.set("PATH", DefaultPath)
	}
	// buildkit sets the image env again on every stage it dispatches
	for _, k := range sc.env.keys() {
		sc.setKey(k)
	}
	return sc
}

// addStep expands c (a fresh copy of orig, or a trigger) in scope sc,
// appends the step and applies ENV and ARG to sc.
func (p *planner) addStep(ctx context.Context, si *stageInfo, sc *scope, sl *stageLint, orig, c instructions.Command) error {
	line, end := parser.Span(c.Location())
	step := &Step{
		Line: line, EndLine: end, Cmd: c,
		Env:      sc.runEnv(),
		Args:     append(sc.args.strs(), p.proxyArgs(sc.args)...),
		ArgNames: sc.args.names(),
		OnBuild:  slices.Contains(si.triggers, orig),
	}
	step.Text = p.df.Text(line, end)
	if step.OnBuild {
		step.Text = fmt.Sprint(c)
	}
	lint := p.lintFor(c.Comments())
	err := p.expand(sc, c, lint)
	if err == nil {
		err = p.budget.exceeded()
	}
	if err != nil {
		return p.errAt(line, fmt.Errorf("expand %s: %w", c.Name(), err))
	}
	p.lintStep(lint, sc, sl, c, si.st.Platform.OS)
	step.Name = p.stepName(sc, orig, c, step.OnBuild)
	if err := p.laterSource(si, orig, c); err != nil {
		return p.errAt(line, err)
	}
	if err := p.stepSources(ctx, si, step, orig); err != nil {
		return p.errAt(line, err)
	}
	if err := p.apply(sc, c); err != nil {
		return p.errAt(line, err)
	}
	p.stepOutline(si, orig, c)
	si.st.Steps = append(si.st.Steps, step)
	return nil
}

// proxyArgs is the proxy environment RUN sees, as BuildKit's ProxyEnv:
// a --build-arg of any case of http_proxy, https_proxy, ftp_proxy,
// no_proxy or all_proxy (with several spellings, the last in sorted order)
// sets both the upper- and the lower-case variable, except those the stage
// declares as ARGs. They are not part of any cache key.
func (p *planner) proxyArgs(declared args) []string {
	keys := slices.Sorted(maps.Keys(p.opts.BuildArgs))
	var out []string
	for _, name := range []string{"http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy"} {
		var value string
		for _, k := range keys {
			if v := p.opts.BuildArgs[k]; v != nil && strings.EqualFold(k, name) {
				value = *v
			}
		}
		if value == "" {
			continue
		}
		for _, k := range []string{strings.ToUpper(name), name} {
			if _, ok := declared.get(k); !ok {
				out = append(out, k+"="+value)
			}
		}
	}
	return out
}

func (p *planner) stepSources(ctx context.Context, si *stageInfo, step *Step, orig instructions.Command) error {
	srcs := si.sources[orig]
	if len(srcs) == 0 {
		return nil
	}
	m, err := p.resolveSources(ctx, srcs)
	if err != nil {
		return err
	}
	if cp, ok := step.Cmd.(*instructions.CopyCommand); ok {
		if b := m[cp.From]; b.Stage != nil || b.Image != nil || b.Context != nil {
			step.From = &b
		}
		return nil
	}
	step.MountFrom = m
	return nil
}

// expand expands c in place the way BuildKit's dispatch does. Variables
// that are neither set nor declared go to lint (UndefinedVar).
func (p *planner) expand(sc *scope, c instructions.Command, lint *linter.Linter) error {
	l := p.scopeLookup(sc)
	word := func(w string) (string, error) {
		s, unmatched, err := p.lex.ProcessWord(w, l)
		lintUnmatched(unmatched, sc, c.Location(), lint)
		return s, err
	}
	switch c := c.(type) {
	case *instructions.ArgCommand:
		return p.expandArgDefaults(sc, c, lint)
	case *instructions.ExposeCommand:
		return p.expandPorts(l, c)
	}
	if ex, ok := c.(instructions.SupportsSingleWordExpansion); ok {
		if err := ex.Expand(word); err != nil {
			return err
		}
	}
	if ex, ok := c.(instructions.SupportsSingleWordExpansionRaw); ok {
		raw := shell.NewLex('\\')
		raw.SkipProcessQuotes = true
		err := ex.ExpandRaw(func(w string) (string, error) {
			s, unmatched, err := raw.ProcessWord(w, l)
			lintUnmatched(unmatched, sc, c.Location(), lint)
			return s, err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *planner) expandPorts(l *lookup, c *instructions.ExposeCommand) error {
	var ports []string
	for _, port := range c.Ports {
		words, err := p.lex.ProcessWords(port, l)
		if err != nil {
			return err
		}
		ports = append(ports, words...)
	}
	c.Ports = ports
	return nil
}

// expandArgDefaults expands ARG default values; keys are never expanded.
// A default that a --build-arg overrides is not evaluated, as in BuildKit
// (so ${FOO:?message} in it cannot fail). As in BuildKit, the args of one
// instruction are declared one after the other: "ARG A=1 B=$A" gives B
// the value 1. Lint sees each key (SecretsUsedInArgOrEnv) and the
// variables of each default (UndefinedVar) in turn.
func (p *planner) expandArgDefaults(sc *scope, c *instructions.ArgCommand, lint *linter.Linter) error {
	run := sc.clone() // the scope as each arg of c sees it
	l := p.scopeLookup(run)
	for i, kv := range c.Args {
		if lint != nil {
			lintSecretKey("ARG", kv.Key, c.Location(), lint)
		}
		if _, overridden := p.buildArg(kv.Key); kv.Value != nil && !overridden {
			v, unmatched, err := p.lex.ProcessWord(*kv.Value, l)
			lintUnmatched(unmatched, run, c.Location(), lint)
			if err != nil {
				return err
			}
			c.Args[i].Value = &v
		}
		value := p.argValue(c.Args[i])
		run.args = run.args.set(kv.Key, value)
		if value != nil && !slices.Contains(nonEnvArgs, kv.Key) {
			run.setArg(kv.Key)
		}
		l.args, l.over = run.args, run.argOver
	}
	return nil
}

// apply changes the scope for ENV and ARG; for ARG it also stores the
// effective value in the expanded command (nil when unset).
func (p *planner) apply(sc *scope, c instructions.Command) error {
	switch c := c.(type) {
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			sc.env.set(kv.Key, kv.Value)
			delete(sc.argOver, kv.Key)
			sc.setKey(kv.Key)
		}
	case *instructions.ArgCommand:
		for i, kv := range c.Args {
			value := p.argValue(kv)
			c.Args[i].Value = value
			sc.args = sc.args.set(kv.Key, value)
			p.declared[kv.Key] = true
			if value != nil && !slices.Contains(nonEnvArgs, kv.Key) {
				sc.setArg(kv.Key)
			}
		}
	case *instructions.ShellCommand:
		sc.shellSet = true
	case *instructions.WorkdirCommand:
		sc.workdirSet = true
	}
	return nil
}

// argValue is BuildKit's rule for an ARG inside a stage: --build-arg wins,
// then the (already expanded) default, then the global value of the same
// name (meta ARG or predefined platform arg).
// stepOutline records what a step adds to the outline: an ARG's args (c
// holds their values, orig their defaults as written), a RUN's mounts.
func (p *planner) stepOutline(si *stageInfo, orig, c instructions.Command) {
	switch c := c.(type) {
	case *instructions.ArgCommand:
		o, _ := orig.(*instructions.ArgCommand)
		for i, kv := range c.Args {
			_, byFlag := p.buildArg(kv.Key)
			_, global := p.global.get(kv.Key)
			inherited := o != nil && i < len(o.Args) && o.Args[i].Value == nil && !byFlag && global
			si.stageArgOutline(c, kv, inherited)
		}
	case *instructions.RunCommand:
		si.mountOutline(c)
	}
}

func (p *planner) argValue(kv instructions.KeyValuePairOptional) *string {
	if v, ok := p.buildArg(kv.Key); ok {
		return &v
	}
	if kv.Value != nil {
		return kv.Value
	}
	if v, ok := p.global.get(kv.Key); ok {
		return &v
	}
	return nil
}
