package planner

import (
	"maps"
	"slices"
	"strings"
)

// envList is a scope's image config env: "K=V" in image-config order, with
// the position of each key. Steps keep the list as it was before them
// without copying it (snapshot): they share the backing array, which set
// only appends to; replacing a value copies the list first if a step
// shares it. A Dockerfile of N ENV lines then costs O(N) time and memory,
// not O(N²).
type envList struct {
	kv     []string
	pos    map[string]int
	shared bool // a snapshot references kv's backing array
}

func newEnvList(kv []string) *envList {
	e := &envList{pos: make(map[string]int, len(kv))}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		e.set(k, v)
	}
	return e
}

func (e *envList) get(key string) (string, bool) {
	if e == nil {
		return "", false
	}
	i, ok := e.pos[key]
	if !ok {
		return "", false
	}
	return e.kv[i][len(key)+1:], true
}

// set replaces key's value in place or appends it, as image config Env
// does.
func (e *envList) set(key, value string) {
	i, ok := e.pos[key]
	if !ok {
		e.pos[key] = len(e.kv)
		e.kv = append(e.kv, key+"="+value)
		return
	}
	if e.shared {
		e.kv, e.shared = slices.Clone(e.kv), false
	}
	e.kv[i] = key + "=" + value
}

// snapshot returns the list as it is now, for a step to keep. It must not
// be modified; appending to it copies it.
func (e *envList) snapshot() []string {
	e.shared = true
	return e.kv[:len(e.kv):len(e.kv)]
}

func (e *envList) clone() *envList {
	return &envList{kv: slices.Clone(e.kv), pos: maps.Clone(e.pos)}
}

func (e *envList) keys() []string {
	if e == nil {
		return nil
	}
	out := make([]string, len(e.kv))
	for i, s := range e.kv {
		out[i], _, _ = strings.Cut(s, "=")
	}
	return out
}
