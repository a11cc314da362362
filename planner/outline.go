package planner

import (
	"maps"
	"path"
	"slices"

	"github.com/builder-dev/builder/parser"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Outline is what a build of the target needs from its user, as BuildKit's
// outline subrequest (buildx --call outline) reports it: the build args
// the target's stages use, the secrets and SSH agents their RUN steps
// mount, and the target's name and description (the comment above its
// FROM).
type Outline struct {
	Name        string
	Description string
	Args        []OutlineArg
	Secrets     []OutlineMount
	SSH         []OutlineMount
}

// OutlineArg is a build arg of the outline: its value in this build (a
// --build-arg or the default), the comment above its ARG, and the line
// range of that ARG.
type OutlineArg struct {
	Name, Value, Description string
	Location                 []bkparser.Range
}

// OutlineMount is a secret or SSH agent a RUN mounts.
type OutlineMount struct {
	ID       string
	Required bool
	Location []bkparser.Range
}

// outlineArg is what the planner knows about one ARG for the outline.
type outlineArg struct {
	def      instructions.KeyValuePairOptional
	value    string
	location []bkparser.Range
	deps     map[string]bool // args its default's expansion read (meta ARGs)
}

// stageOutline is one stage's part of the outline, as BuildKit's
// frontend collects it while it dispatches the stage: the args it knows
// (the meta ARGs, then its own), those it used (in its FROM line, and
// every ARG it declares), and its mounts.
type stageOutline struct {
	args    map[string]outlineArg
	used    map[string]bool
	secrets map[string]OutlineMount
	ssh     map[string]OutlineMount
}

func newStageOutline(global map[string]outlineArg) *stageOutline {
	args := maps.Clone(global)
	if args == nil {
		args = map[string]outlineArg{}
	}
	return &stageOutline{args: args, used: map[string]bool{}, secrets: map[string]OutlineMount{}, ssh: map[string]OutlineMount{}}
}

// metaArgOutline records a meta ARG: the args its default read are its
// dependencies (a default reading the arg itself inherits the earlier
// definition's).
func (p *planner) metaArgOutline(cmd instructions.ArgCommand, kv instructions.KeyValuePairOptional, value *string, matched map[string]struct{}) {
	if p.outline == nil {
		p.outline = map[string]outlineArg{}
	}
	info := outlineArg{def: kv, location: cmd.Location(), deps: map[string]bool{}}
	for k := range matched {
		if k != kv.Key {
			info.deps[k] = true
		}
	}
	if _, self := matched[kv.Key]; self {
		for k := range p.outline[kv.Key].deps {
			info.deps[k] = true
		}
	}
	if value != nil {
		info.value = *value
	}
	p.outline[kv.Key] = info
}

// stageArgOutline records a stage's ARG: an ARG without a default or a
// --build-arg value that takes a meta ARG's value keeps that meta ARG's
// definition, as in BuildKit.
func (si *stageInfo) stageArgOutline(c *instructions.ArgCommand, kv instructions.KeyValuePairOptional, inherited bool) {
	o := si.outline
	if !inherited {
		info := outlineArg{def: kv, location: c.Location()}
		if kv.Value != nil {
			info.value = *kv.Value
		}
		o.args[kv.Key] = info
	}
	o.used[kv.Key] = true
}

// mountOutline records the secrets and SSH agents a RUN mounts.
func (si *stageInfo) mountOutline(c *instructions.RunCommand) {
	for _, m := range instructions.GetMounts(c) {
		switch m.Type {
		case instructions.MountTypeSecret:
			id := m.CacheID
			if m.Source != "" {
				id = m.Source
			}
			if id == "" {
				id = path.Base(m.Target)
			}
			if _, ok := si.outline.secrets[id]; !ok {
				si.outline.secrets[id] = OutlineMount{ID: id, Required: m.Required, Location: c.Location()}
			}
		case instructions.MountTypeSSH:
			id := m.CacheID
			if id == "" {
				id = "default"
			}
			if _, ok := si.outline.ssh[id]; !ok {
				si.outline.ssh[id] = OutlineMount{ID: id, Required: m.Required, Location: c.Location()}
			}
		}
	}
}

// buildOutline is the outline of the target: its stage's args, secrets
// and SSH agents, then those of its base stage and the stages it reads,
// each listed once, in source order.
func (p *planner) buildOutline(target int) *Outline {
	out := &Outline{Name: p.df.Stages[target].Name, Description: p.df.Stages[target].DocComment}
	seenArgs, seenSecrets, seenSSH, seenStages := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[int]bool{}
	var visit func(i int)
	visit = func(i int) {
		si := p.stages[i]
		if seenStages[i] || si.outline == nil {
			return
		}
		seenStages[i] = true
		o := si.outline
		used := map[string]bool{}
		o.markUsed(o.used, used)
		for _, k := range slices.Sorted(maps.Keys(used)) {
			a, ok := o.args[k]
			if !ok || seenArgs[k] {
				continue
			}
			seenArgs[k] = true
			out.Args = append(out.Args, OutlineArg{Name: a.def.Key, Value: a.value, Description: a.def.DocComment, Location: a.location})
		}
		out.Secrets = appendMounts(out.Secrets, o.secrets, seenSecrets)
		out.SSH = appendMounts(out.SSH, o.ssh, seenSSH)
		if si.baseStage >= 0 {
			visit(si.baseStage)
		}
		for _, d := range slices.Sorted(maps.Keys(si.deps)) {
			visit(d)
		}
	}
	visit(target)
	byLine := func(a, b []bkparser.Range) int {
		la, _ := parser.Span(a)
		lb, _ := parser.Span(b)
		return la - lb
	}
	slices.SortStableFunc(out.Args, func(a, b OutlineArg) int { return byLine(a.Location, b.Location) })
	slices.SortStableFunc(out.Secrets, func(a, b OutlineMount) int { return byLine(a.Location, b.Location) })
	slices.SortStableFunc(out.SSH, func(a, b OutlineMount) int { return byLine(a.Location, b.Location) })
	return out
}

// markUsed adds in and, through the dependencies of meta ARG defaults,
// every arg they read to used.
func (o *stageOutline) markUsed(in, used map[string]bool) {
	for k := range in {
		if used[k] {
			continue
		}
		used[k] = true
		if a, ok := o.args[k]; ok {
			o.markUsed(a.deps, used)
		}
	}
}

func appendMounts(out []OutlineMount, m map[string]OutlineMount, seen map[string]bool) []OutlineMount {
	for _, id := range slices.Sorted(maps.Keys(m)) {
		if !seen[id] {
			seen[id] = true
			out = append(out, m[id])
		}
	}
	return out
}
