package cache

import (
	"fmt"
	"path"
	"sort"
	"strings"
)

// maxReasons is how many differences Explain spells out before summarising.
const maxReasons = 3

// Explain compares the inputs of the same step in an earlier build (prev)
// and now (cur) and returns a short human reason for the cache miss, such as
// "build arg VERSION changed (1.2 → 1.3)" or "src/main.go content changed".
// It returns "" when the inputs are equal, and "no earlier build of this
// step" when prev is nil. Differences are listed in a fixed order
// (instruction, base image, build args, env, other fields, files), at most
// three, then "and N more".
func Explain(prev, cur *Inputs) string {
	if prev == nil {
		return "no earlier build of this step"
	}
	if cur == nil {
		return "step removed"
	}
	var reasons []string
	if prev.Op != cur.Op {
		reasons = append(reasons, "instruction changed")
	}
	reasons = append(reasons, fieldReasons(prev.Fields, cur.Fields, prev.Op != cur.Op)...)
	reasons = append(reasons, fileReasons(prev.Files, cur.Files)...)
	if len(reasons) > maxReasons {
		more := len(reasons) - maxReasons
		reasons = append(reasons[:maxReasons], fmt.Sprintf("and %d more", more))
	}
	return strings.Join(reasons, "; ")
}

// fieldReasons explains differing fields. Fields sharing a name are compared
// as an ordered list, the way KeyOf hashes them.
func fieldReasons(prev, cur []Field, opChanged bool) []string {
	pm, cm := groupFields(prev), groupFields(cur)
	names := unionKeys(pm, cm)
	sort.SliceStable(names, func(i, j int) bool { return fieldRank(names[i]) < fieldRank(names[j]) })
	var out []string
	for _, n := range names {
		a, aok := pm[n]
		b, bok := cm[n]
		if aok == bok && a == b {
			continue
		}
		if n == "instruction" && opChanged {
			continue // already said
		}
		out = append(out, fieldReason(n, show(a, aok), show(b, bok)))
	}
	return out
}

func fieldReason(n, a, b string) string {
	switch {
	case n == "instruction":
		return "instruction changed"
	case n == "base.digest":
		return fmt.Sprintf("base image changed (%s → %s)", shortDigest(a), shortDigest(b))
	case strings.HasPrefix(n, "arg."):
		return fmt.Sprintf("build arg %s changed (%s → %s)", n[len("arg."):], clip(a), clip(b))
	case strings.HasPrefix(n, "env."):
		return fmt.Sprintf("env %s changed (%s → %s)", n[len("env."):], clip(a), clip(b))
	case n == "from" || strings.HasPrefix(n, "mount.") && strings.HasSuffix(n, ".from"):
		return sourceReason(a, b)
	}
	return n + " changed"
}

// sourceReason explains a changed "from" field, the identity of the stage
// or image a step reads: "NAME@ID" ("stage build@sha256:…", "image
// alpine@sha256:…").
func sourceReason(a, b string) string {
	an, _, _ := strings.Cut(a, "@")
	bn, _, _ := strings.Cut(b, "@")
	if an == bn {
		return an + " changed"
	}
	return fmt.Sprintf("source changed (%s → %s)", clip(an), clip(bn))
}

// fieldRank orders reasons: instruction, base image, args, env, the rest.
func fieldRank(n string) int {
	switch {
	case n == "instruction":
		return 0
	case strings.HasPrefix(n, "base."):
		return 1
	case strings.HasPrefix(n, "arg."):
		return 2
	case strings.HasPrefix(n, "env."):
		return 3
	}
	return 4
}

// groupFields joins the values of fields sharing a name with newlines.
func groupFields(fs []Field) map[string]string {
	m := make(map[string]string, len(fs))
	for _, f := range fs {
		if v, ok := m[f.Name]; ok {
			m[f.Name] = v + "\n" + f.Value
		} else {
			m[f.Name] = f.Value
		}
	}
	return m
}

func unionKeys[V any](a, b map[string]V) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func show(v string, ok bool) string {
	if !ok {
		return "unset"
	}
	return v
}

// clip keeps displayed values short and on one line.
func clip(v string) string {
	v = strings.ReplaceAll(v, "\n", " ")
	if r := []rune(v); len(r) > 40 {
		return string(r[:39]) + "…"
	}
	return v
}

// shortDigest turns "sha256:<64 hex>" into "sha256:<12 hex>".
func shortDigest(d string) string {
	if alg, h, ok := strings.Cut(d, ":"); ok && len(h) > 12 {
		return alg + ":" + h[:12]
	}
	return d
}

// fileReasons explains differing COPY/ADD sources: added and removed files
// are counted per common directory, changed files named when alone.
func fileReasons(prev, cur []FileInput) []string {
	pm, cm := fileMap(prev), fileMap(cur)
	var added, removed, content []string
	var out []string
	for _, key := range unionKeys(pm, cm) {
		a, aok := pm[key]
		b, bok := cm[key]
		p := shownPath(key)
		switch {
		case !aok:
			added = append(added, p)
		case !bok:
			removed = append(removed, p)
		case a.Type != b.Type:
			out = append(out, fmt.Sprintf("%s changed from %s to %s", p, a.Type, b.Type))
		case a.Digest != b.Digest:
			content = append(content, p)
		case a.Link != b.Link:
			out = append(out, fmt.Sprintf("link target of %s changed (%s → %s)", p, clip(a.Link), clip(b.Link)))
		case a.Mode != b.Mode:
			out = append(out, fmt.Sprintf("mode of %s changed (%04o → %04o)", p, a.Mode, b.Mode))
		}
	}
	var head []string
	if r := fileGroup(content, "content changed", "changed"); r != "" {
		head = append(head, r)
	}
	if r := fileGroup(added, "added", "added"); r != "" {
		head = append(head, r)
	}
	if r := fileGroup(removed, "removed", "removed"); r != "" {
		head = append(head, r)
	}
	return append(head, out...)
}

func fileMap(fs []FileInput) map[string]FileInput {
	m := make(map[string]FileInput, len(fs))
	for _, f := range fs {
		m[f.Path] = f
	}
	return m
}

// shownPath is a file input's path as the user wrote it: a step with
// several sources prefixes each source's files with the source's number
// ("0/src/main.go"); a reason names "src/main.go".
func shownPath(p string) string {
	first, rest, ok := strings.Cut(p, "/")
	if !ok || rest == "" || strings.Trim(first, "0123456789") != "" {
		return p
	}
	return rest
}

// fileGroup renders "a.txt removed" for one path and "3 files added under
// src/" for several.
func fileGroup(paths []string, one, many string) string {
	switch len(paths) {
	case 0:
		return ""
	case 1:
		return paths[0] + " " + one
	}
	if dir := commonDir(paths); dir != "" {
		return fmt.Sprintf("%d files %s under %s/", len(paths), many, dir)
	}
	return fmt.Sprintf("%d files %s", len(paths), many)
}

// commonDir returns the deepest directory containing every path, or "".
func commonDir(paths []string) string {
	dir := path.Dir(paths[0])
	for _, p := range paths[1:] {
		for dir != "." && dir != "/" && !strings.HasPrefix(p, dir+"/") {
			dir = path.Dir(dir)
		}
	}
	if dir == "." || dir == "/" {
		return ""
	}
	return dir
}
