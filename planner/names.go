package planner

import (
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// maxNameExpansion bounds what variables may add to one step's name; past
// it the name is the instruction as written.
const maxNameExpansion = 64 << 10

// stepName is the text BuildKit shows for a step that makes a build
// vertex (RUN, COPY, ADD, WORKDIR), without its "[stage i/n]" prefix:
// the instruction as written, on one line, with its keyword upper-cased
// and the variables of the scope before it expanded. In a RUN, quotes and
// escapes are kept, unset variables stay as written, a variable that a
// secret mount sets (env=) shows as "****", and a lone heredoc adds a
// summary of its first line; an inherited ONBUILD trigger is prefixed with
// "ONBUILD ". "" for other instructions.
func (p *planner) stepName(sc *scope, orig, c instructions.Command, trigger bool) string {
	text := ""
	if s, ok := orig.(interface{ String() string }); ok {
		text = s.String()
	}
	var lex shell.Lex
	if p.lex != nil {
		lex = *p.lex
	}
	l := newLookup(sc.env, sc.args)
	l.budget = &budget{used: maxExpansion - maxNameExpansion}
	var env shell.EnvGetter = l
	switch c := c.(type) {
	case *instructions.RunCommand:
		lex.RawQuotes, lex.RawEscapes, lex.SkipUnsetEnv = true, true, true
		text += heredocSummary(c)
		env = secretMasked(c, l)
	case *instructions.CopyCommand, *instructions.AddCommand, *instructions.WorkdirCommand:
	default:
		return ""
	}
	if w, _, err := lex.ProcessWord(text, env); err == nil && l.budget.exceeded() == nil {
		text = w
	}
	if trigger {
		return "ONBUILD " + upperKeyword(text)
	}
	return upperKeyword(text)
}

// heredocSummary is what BuildKit appends to the name of a RUN whose
// command is one heredoc: " (first line...)".
func heredocSummary(c *instructions.RunCommand) string {
	if len(c.Files) == 0 || len(c.CmdLine) != 1 || !c.PrependShell || parser.MustParseHeredoc(c.CmdLine[0]) == nil {
		return ""
	}
	doc := strings.TrimSpace(c.Files[0].Data)
	lines := strings.Split(strings.ReplaceAll(doc, "\r\n", "\n"), "\n")
	s := lines[0]
	if len(lines) > 1 {
		s += "..."
	}
	return " (" + s + ")"
}

// upperKeyword upper-cases the first word.
func upperKeyword(s string) string {
	kw, rest, ok := strings.Cut(s, " ")
	if !ok {
		return strings.ToUpper(s)
	}
	return strings.ToUpper(kw) + " " + rest
}

// secretEnv hides the values of the variables that secret mounts set.
type secretEnv struct {
	base   shell.EnvGetter
	masked map[string]bool
}

func secretMasked(c *instructions.RunCommand, base shell.EnvGetter) shell.EnvGetter {
	masked := map[string]bool{}
	for _, m := range instructions.GetMounts(c) {
		if m.Type == instructions.MountTypeSecret && m.Env != nil {
			masked[*m.Env] = true
		}
	}
	if len(masked) == 0 {
		return base
	}
	return &secretEnv{base: base, masked: masked}
}

func (s *secretEnv) Get(key string) (string, bool) {
	if s.masked[key] {
		return "****", true
	}
	return s.base.Get(key)
}

func (s *secretEnv) Keys() []string {
	keys := s.base.Keys()
	for k := range s.masked {
		keys = append(keys, k)
	}
	return keys
}
