package planner

import (
	"fmt"
	"slices"
	"strings"
)

// arg is one build arg in scope; a nil value means declared but unset.
type arg struct {
	key   string
	value *string
}

// args is an ordered set of build args, in declaration order.
type args []arg

func (a args) get(key string) (string, bool) {
	for _, x := range a {
		if x.key == key && x.value != nil {
			return *x.value, true
		}
	}
	return "", false
}

// set replaces key in place or appends it. A nil value (an ARG
// redeclared without a value that nothing else sets) keeps the value the
// key has: BuildKit leaves the earlier ARG's value in the stage's
// environment.
func (a args) set(key string, value *string) args {
	for i := range a {
		if a[i].key == key {
			if value != nil {
				a[i].value = value
			}
			return a
		}
	}
	return append(a, arg{key: key, value: value})
}

// names returns the key of every declared arg, with a value or not.
func (a args) names() []string {
	out := make([]string, 0, len(a))
	for _, x := range a {
		out = append(out, x.key)
	}
	return out
}

func (a args) keys() []string {
	var out []string
	for _, x := range a {
		if x.value != nil {
			out = append(out, x.key)
		}
	}
	return out
}

// strs returns "K=V" for every arg with a value.
func (a args) strs() []string {
	var out []string
	for _, x := range a {
		if x.value != nil {
			out = append(out, x.key+"="+*x.value)
		}
	}
	return out
}

// envGet returns the value of key in a "K=V" list.
func envGet(env []string, key string) (string, bool) {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v, true
		}
	}
	return "", false
}

// lookup is the variable scope of one expansion: ENV values win over build
// args of the same name (Docker's rule), except for the keys in over, which
// an ARG set after the ENV (BuildKit's rule: the later one wins).
type lookup struct {
	env    *envList
	args   args
	over   map[string]bool
	budget *budget // nil: unbounded
}

func newLookup(env *envList, a args) *lookup {
	return &lookup{env: env, args: a}
}

// Get implements shell.EnvGetter.
func (l *lookup) Get(key string) (string, bool) {
	if l.over[key] {
		if v, ok := l.args.get(key); ok {
			return l.budget.take(v), true
		}
	}
	if v, ok := l.env.get(key); ok {
		return l.budget.take(v), true
	}
	v, ok := l.args.get(key)
	return l.budget.take(v), ok
}

// maxExpansion bounds the bytes that variable references expand to in one
// plan. Without a bound, a few hundred bytes of "ENV A=$A$A" lines double
// a value at every line until the process runs out of memory.
const maxExpansion = 16 << 20

// budget counts the bytes variable references expanded to.
type budget struct{ used int64 }

// take charges v to the budget and returns it, or "" once the budget is
// spent (the expansion then fails with exceeded).
func (b *budget) take(v string) string {
	if b == nil {
		return v
	}
	b.used += int64(len(v))
	if b.used > maxExpansion {
		return ""
	}
	return v
}

// exceeded reports a spent budget.
func (b *budget) exceeded() error {
	if b != nil && b.used > maxExpansion {
		return fmt.Errorf("variables expand to more than %d MiB in total", maxExpansion>>20)
	}
	return nil
}

// Keys implements shell.EnvGetter.
func (l *lookup) Keys() []string {
	keys := l.env.keys()
	for _, k := range l.args.keys() {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// remove returns a without key (a copy: a is not changed).
func (a args) remove(key string) args {
	out := make(args, 0, len(a))
	for _, x := range a {
		if x.key != key {
			out = append(out, x)
		}
	}
	return out
}
