package executor

import (
	"encoding/hex"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/buildcontext"
)

// Inputs lists every selected file for the cache key. Paths are prefixed by
// the source's index and its path as written so that sources never
// collide; the parent directories that --parents recreates are listed at
// their own paths, which are ancestors of the source's.
func (p *copyPlan) Inputs() []cache.FileInput {
	n := 0
	for _, s := range p.sources {
		n += len(s.parents) + len(s.entries)
	}
	out := make([]cache.FileInput, 0, n)
	seen := map[string]bool{}
	for _, s := range p.sources {
		prefix := fmt.Sprintf("%d/%s", s.index, buildcontext.Clean(s.written))
		if s.url != nil || s.data != nil {
			prefix = fmt.Sprintf("%d/%s", s.index, s.name)
		}
		for _, d := range s.parents {
			in := copyFileInput(fmt.Sprintf("%d/%s", s.index, path.Join(s.pivot, d.rel)), "", d)
			if !seen[in.Path] {
				seen[in.Path] = true
				out = append(out, in)
			}
		}
		for _, e := range s.entries {
			out = append(out, copyFileInput(path.Join(prefix, e.rel), prefix, e))
		}
	}
	return out
}

func copyFileInput(p, prefix string, e copyEntry) cache.FileInput {
	in := cache.FileInput{Path: p, Type: copyKindNames[e.kind], Mode: copyModeBits(e.mode), Digest: e.digest, Link: e.link}
	if e.kind == copyHardlink {
		in.Link = path.Join(prefix, e.link)
	}
	return in
}

// Fields lists the flags and non-file inputs of the step for the cache key.
func (p *copyPlan) Fields() []cache.Field {
	dest := p.dest
	if p.destDir {
		dest = strings.TrimSuffix(dest, "/") + "/"
	}
	fields := []cache.Field{{Name: "dest", Value: dest}}
	add := func(name, v string) {
		if v != "" {
			fields = append(fields, cache.Field{Name: name, Value: v})
		}
	}
	add("flag.chown", p.req.Chown)
	add("flag.chmod", p.req.Chmod)
	if p.chmod != nil && p.chmod.actions != nil {
		add("chmod.rules", "fsutil") // symbolic: not what older builders made of it (umask 022, X)
	}
	add("flag.checksum", p.req.Checksum)
	add("flag.link", strconv.FormatBool(p.req.Link))
	if p.req.linkLayer() {
		add("layer", "on-scratch") // not the layer older builders made
	}
	add("flag.keep-git-dir", strconv.FormatBool(p.req.KeepGitDir))
	if p.req.Parents {
		add("flag.parents", "true")
	}
	if p.req.Unpack != nil {
		add("flag.unpack", strconv.FormatBool(*p.req.Unpack))
	}
	for _, x := range p.req.Exclude {
		add("flag.exclude", x)
	}
	for _, pv := range p.pivots {
		add("source."+strconv.Itoa(pv.index)+".pivot", pv.pivot)
	}
	for _, s := range p.sources {
		p.sourceFields(s, add)
	}
	return fields
}

func (p *copyPlan) sourceFields(s *copySource, add func(name, v string)) {
	key := "source." + strconv.Itoa(s.index)
	switch {
	case s.git != nil:
		add(key+".git", s.git.field())
	case s.url != nil:
		add(key+".url", s.url.url)
		add(key+".url.digest", s.url.digest)
		add(key+".url.mtime", s.url.modTime.UTC().Format(time.RFC3339Nano))
	case s.data != nil:
		add(key+".heredoc", s.written)
	case s.archive:
		add(key+".extract", s.written)
	case s.pivot != "":
		add(key+".pivot."+s.written, s.pivot)
	}
	for _, e := range s.entries {
		for k, v := range e.xattrs {
			add(key+".xattr."+path.Join(s.name, e.rel)+"."+k, hex.EncodeToString(v))
		}
		if p.keepsOwners() && e.kind != copyHardlink {
			add(key+".owner."+path.Join(s.name, e.rel), fmt.Sprintf("%d:%d", e.uid, e.gid))
		}
	}
}
