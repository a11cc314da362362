package planner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/builder-dev/builder/parser"
	cplatforms "github.com/containerd/platforms"
	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/util/suggest"
)

// setupStages expands every FROM line with the global scope and records
// each stage's base and the stages or images its commands read from.
func (p *planner) setupStages() error {
	for i := range p.df.Stages {
		src := &p.df.Stages[i]
		line, end := parser.Span(src.Location)
		si := &stageInfo{
			st:        &Stage{Index: i, Name: src.Name, Line: line, Text: p.df.Text(line, end)},
			src:       src,
			baseStage: -1,
			deps:      map[int]bool{},
			sources:   map[instructions.Command][]sourceRef{},
			readers:   map[int]int{},
		}
		p.stages = append(p.stages, si)
		p.lintFrom(src)
		if p.overrideStage(si) {
			continue
		}
		if err := p.setupBase(i, si); err != nil {
			return p.errAt(line, err)
		}
		for _, c := range src.Commands {
			if err := p.addSources(i, si, c); err != nil {
				l, _ := parser.Span(c.Location())
				return p.errAt(l, err)
			}
		}
	}
	return p.checkCycles()
}

func (p *planner) setupBase(i int, si *stageInfo) error {
	res, err := p.lex.ProcessWordWithMatches(si.src.BaseName, p.lookup(nil, p.global))
	if err == nil {
		err = p.budget.exceeded()
	}
	if err != nil {
		return err
	}
	si.outline = newStageOutline(p.outline)
	for k := range res.Matched {
		si.outline.used[k] = true
	}
	if res.Result == "" {
		return fmt.Errorf("base name (%s) should not be blank", si.src.BaseName)
	}
	si.baseName = res.Result
	if err := p.setupPlatform(si); err != nil {
		return err
	}
	if p.contextBase(si) {
		return nil
	}
	switch {
	case si.baseName == "scratch":
		si.st.Base.Scratch = true
	case p.stageByName(si.baseName, i) >= 0:
		si.baseStage = p.stageByName(si.baseName, i)
	default:
		if n, err := strconv.Atoi(si.baseName); err == nil && n >= 0 && n < i {
			si.baseStage = n
		}
	}
	if si.baseStage >= 0 {
		si.deps[si.baseStage] = true
	}
	return nil
}

func (p *planner) setupPlatform(si *stageInfo) error {
	si.st.Platform = p.target
	if si.src.Platform == "" {
		return nil
	}
	res, err := p.lex.ProcessWordWithMatches(si.src.Platform, p.lookup(nil, p.global))
	if err == nil {
		err = p.budget.exceeded()
	}
	if err != nil {
		return fmt.Errorf("failed to process arguments for platform %s: %w", res.Result, err)
	}
	for k := range res.Matched {
		si.outline.used[k] = true
	}
	if res.Result == "" {
		return p.suggestArg(fmt.Errorf("empty platform value from expression %s", si.src.Platform), res.Unmatched)
	}
	pl, err := cplatforms.Parse(res.Result)
	if err != nil {
		return fmt.Errorf("failed to parse platform %s: %w", si.src.Platform, p.suggestArg(err, res.Unmatched))
	}
	si.st.Platform = v1.Platform{OS: pl.OS, Architecture: pl.Architecture, Variant: pl.Variant, OSVersion: pl.OSVersion, OSFeatures: pl.OSFeatures}
	return nil
}

// suggestArg adds "(did you mean X?)" to err when one of the undefined
// variables looks like a misspelt global arg, as BuildKit does.
func (p *planner) suggestArg(err error, unmatched map[string]struct{}) error {
	keys := p.global.keys()
	for _, k := range slices.Sorted(maps.Keys(unmatched)) {
		if ok, werr := suggest.WrapErrorMaybe(err, k, keys, true); ok {
			return werr
		}
	}
	return err
}

// addSources records the stages and images that c reads (COPY --from,
// RUN --mount from=) as dependencies of stage i.
func (p *planner) addSources(i int, si *stageInfo, c instructions.Command) error {
	var srcs []sourceRef
	switch c := c.(type) {
	case *instructions.CopyCommand:
		if c.From == "" {
			return nil
		}
		if res, _, err := p.lex.ProcessWord(c.From, newLookup(nil, nil)); err != nil || res != c.From {
			return errors.New("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround")
		}
		s, err := p.parseStageRef(i, c.From, true)
		if err != nil {
			return err
		}
		srcs = append(srcs, s)
	case *instructions.RunCommand:
		for _, m := range instructions.GetMounts(c) {
			if m.From == "" {
				continue
			}
			s, err := p.parseStageRef(i, m.From, false)
			if err != nil {
				return err
			}
			srcs = append(srcs, s)
		}
	}
	line, _ := parser.Span(c.Location())
	for _, s := range srcs {
		if s.stage >= 0 {
			si.deps[s.stage] = true
			if _, ok := si.readers[s.stage]; !ok {
				si.readers[s.stage] = line
			}
		}
	}
	si.sources[c] = srcs
	return nil
}

// checkCycles fails when stages read from each other in a circle (COPY
// --from or RUN --mount from= edges, a stage reading itself included),
// naming the first stage, in Dockerfile order, that reaches the circle and
// the line of the first command on the way, as BuildKit does. It looks at
// every stage, built or not.
func (p *planner) checkCycles() error {
	visited := map[int]bool{}
	onPath := map[int]bool{}
	var visit func(i int, first int) (int, bool)
	visit = func(i, first int) (int, bool) {
		if visited[i] {
			return 0, false
		}
		visited[i], onPath[i] = true, true
		for _, d := range slices.Sorted(maps.Keys(p.stages[i].readers)) {
			line := first
			if line == 0 {
				line = p.stages[i].readers[d]
			}
			if onPath[d] {
				return line, true
			}
			if l, ok := visit(d, line); ok {
				return l, true
			}
		}
		onPath[i] = false
		return 0, false
	}
	for i := range p.stages {
		if line, ok := visit(i, 0); ok {
			return p.errAt(line, fmt.Errorf("circular dependency detected on stage: %s", p.displayName(i)))
		}
	}
	return nil
}

// laterSource fails when a step of stage si reads from a stage that is
// not built before it (defined later in the Dockerfile), with BuildKit's
// words for COPY --from and RUN --mount from=.
func (p *planner) laterSource(si *stageInfo, orig, c instructions.Command) error {
	later := func(key string) bool {
		for _, s := range si.sources[orig] {
			if s.key == key && s.stage >= si.st.Index {
				return true
			}
		}
		return false
	}
	switch c := c.(type) {
	case *instructions.CopyCommand:
		if later(c.From) {
			return fmt.Errorf("cannot copy from stage %q, it needs to be defined before current stage %q", c.From, p.displayName(si.st.Index))
		}
	case *instructions.RunCommand:
		for _, m := range instructions.GetMounts(c) {
			if m.From != "" && later(m.From) {
				return fmt.Errorf("cannot mount from stage %q to %q, stage needs to be defined before current command", m.From, m.Target)
			}
		}
	}
	return nil
}

// reachable returns the stages target needs, in index order (which is a
// topological order: every edge points to an earlier stage). With
// Options.AllStages it adds every stage that is not a directory context.
func (p *planner) reachable(target int) []int {
	seen := map[int]bool{}
	if p.opts.AllStages {
		for i, si := range p.stages {
			seen[i] = si.st.Base.Context == nil
		}
	}
	var visit func(int)
	visit = func(i int) {
		if seen[i] {
			return
		}
		seen[i] = true
		for d := range p.stages[i].deps {
			visit(d)
		}
	}
	visit(target)
	var out []int
	for i := range p.stages {
		if seen[i] {
			out = append(out, i)
		}
	}
	return out
}

// resolve resolves the base images of the reachable stages and inserts
// ONBUILD triggers, repeating while triggers add new dependencies.
func (p *planner) resolve(ctx context.Context, target int) ([]int, error) {
	for {
		reach := p.reachable(target)
		grew := false
		for _, i := range reach {
			si := p.stages[i]
			if err := p.resolveBase(ctx, si); err != nil {
				return nil, err
			}
			n := len(si.deps)
			if err := p.addTriggers(i, si); err != nil {
				return nil, p.errAt(si.st.Line, err)
			}
			grew = grew || len(si.deps) > n
		}
		if !grew {
			return reach, nil
		}
	}
}

func (p *planner) resolveBase(ctx context.Context, si *stageInfo) error {
	if si.st.Base.Context != nil || si.st.Base.Scratch || si.st.Base.Image != nil || si.baseStage >= 0 {
		return nil
	}
	img, err := p.image(ctx, si.baseName, si.st.Platform)
	if err != nil {
		return p.errAt(si.st.Line, err)
	}
	si.st.Base.Image = img
	p.lintBasePlatform(si, img)
	return nil
}

// addTriggers parses the ONBUILD triggers a stage inherits: those of its
// base image, or the ONBUILD instructions of its base stage (not the
// base's own inherited ones: triggers do not reach grandchildren).
func (p *planner) addTriggers(i int, si *stageInfo) error {
	if si.triggered {
		return nil
	}
	si.triggered = true
	var exprs []string
	if img := si.st.Base.Image; img != nil && img.Config != nil {
		exprs = img.Config.Config.OnBuild
	}
	if si.baseStage >= 0 {
		for _, c := range p.stages[si.baseStage].src.Commands {
			if ob, ok := c.(*instructions.OnbuildCommand); ok {
				exprs = append(exprs, ob.Expression)
			}
		}
	}
	for _, e := range exprs {
		c, err := parser.ParseTrigger(e, si.st.Line)
		if err != nil {
			return err
		}
		if err := p.addSources(i, si, c); err != nil {
			return fmt.Errorf("ONBUILD %s: %w", e, err)
		}
		si.triggers = append(si.triggers, c)
	}
	return nil
}

// image resolves ref for platform once per distinct pair.
func (p *planner) image(ctx context.Context, ref string, platform v1.Platform) (*ImageInfo, error) {
	key := ref + "\x00" + FormatPlatform(platform) + "\x00" + platform.OSVersion
	if img, ok := p.images[key]; ok {
		return img, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, err := reference.ParseNormalizedNamed(ref); err != nil {
		return nil, fmt.Errorf("failed to parse stage name %q: %w", ref, err) // buildkit's wording
	}
	img, err := p.opts.ResolveImage(ctx, ref, platform)
	if err != nil {
		return nil, p.suggestStage(fmt.Errorf("resolve image %s: %w", ref, err), ref)
	}
	if img == nil || img.Config == nil {
		return nil, fmt.Errorf("resolve image %s: resolver returned no config", ref)
	}
	p.images[key] = img
	return img, nil
}

// suggestStage adds "did you mean <stage>?" when ref looks like a
// misspelt stage name.
func (p *planner) suggestStage(err error, ref string) error {
	return suggest.WrapError(err, ref, p.stageNames(), false)
}

// resolveSources resolves the images that the steps of a stage read from.
func (p *planner) resolveSources(ctx context.Context, srcs []sourceRef) (map[string]Source, error) {
	out := map[string]Source{}
	for _, s := range srcs {
		if s.stage >= 0 {
			out[s.key] = Source{Stage: p.stages[s.stage].st}
			continue
		}
		if s.dir != nil {
			out[s.key] = Source{Context: s.dir}
			continue
		}
		img, err := p.image(ctx, s.image, p.target)
		if err != nil {
			return nil, err
		}
		out[s.key] = Source{Image: img}
	}
	return out, nil
}
