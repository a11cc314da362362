package buildcontext

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
)

// Entry is one visible entry below a walked directory.
type Entry struct {
	Rel  string      // resolved, slash-separated, relative to the context root
	Info fs.FileInfo // from Lstat: symlinks are not followed
}

// HasMeta reports whether p contains filepath.Match wildcards.
func HasMeta(p string) bool { return strings.ContainsAny(p, `*?[`) }

// Glob returns the visible paths (as written, relative to the root) that
// match pattern with filepath.Match semantics per path component. Directory
// components are resolved through symlinks inside the root; excluded
// entries never match. No match is an empty result, not an error.
func (c *Context) Glob(ctx context.Context, pattern string) ([]string, error) {
	clean := Clean(pattern)
	if _, err := path.Match(clean, ""); err != nil {
		return nil, fmt.Errorf("glob %q: %w", pattern, err)
	}
	candidates := []string{"."}
	for _, comp := range strings.Split(clean, "/") {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var next []string
		for _, cand := range candidates {
			m, err := c.globComponent(cand, comp)
			if err != nil {
				return nil, err
			}
			next = append(next, m...)
		}
		candidates = next
	}
	var out []string
	for _, cand := range candidates {
		if _, err := c.Resolve(cand); err == nil {
			out = append(out, cand)
		} else if !skipInGlob(err) {
			return nil, err
		}
	}
	sort.Strings(out)
	return out, nil
}

// globComponent expands one path component below the written path dir.
func (c *Context) globComponent(dir, comp string) ([]string, error) {
	if !HasMeta(comp) {
		return []string{path.Join(dir, comp)}, nil
	}
	real, err := c.Resolve(dir)
	if skipInGlob(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names, err := c.readDirNames(real)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range names {
		if ok, _ := path.Match(comp, name); !ok {
			continue
		}
		if _, err := c.vfs().Lstat(c.HostPath(path.Join(real, name))); err != nil {
			continue // excluded
		}
		out = append(out, path.Join(dir, name))
	}
	return out, nil
}

// skipInGlob reports whether a resolution error just means "no match":
// the path is absent, excluded, or a symlink loop.
func skipInGlob(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, syscall.ELOOP)
}

// readDirNames lists a resolved directory; a non-directory has no entries.
func (c *Context) readDirNames(rel string) ([]string, error) {
	f, err := os.OpenFile(c.HostPath(rel), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY, 0)
	if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ELOOP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read dir %q: %w", "/"+rel, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read dir %q: %w", "/"+rel, err)
	}
	sort.Strings(names)
	return names, nil
}

// Walk lists the visible entries below the resolved directory rel, parents
// before children, in lexical order, without following symlinks. An
// excluded directory that "!" patterns partly re-include is listed only
// when something below it is.
func (c *Context) Walk(ctx context.Context, rel string) ([]Entry, error) {
	return c.walk(ctx, Clean(rel))
}

func (c *Context) walk(ctx context.Context, dir string) ([]Entry, error) {
	names, err := c.readDirNames(dir)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rel := path.Join(dir, name)
		fi, err := os.Lstat(c.HostPath(rel))
		if err != nil {
			return nil, fmt.Errorf("lstat %q: %w", "/"+rel, err)
		}
		entries, err := c.walkEntry(ctx, rel, fi)
		if err != nil {
			return nil, err
		}
		out = append(out, entries...)
	}
	return out, nil
}

func (c *Context) walkEntry(ctx context.Context, rel string, fi fs.FileInfo) ([]Entry, error) {
	ex, err := c.Excluded(rel)
	if err != nil {
		return nil, err
	}
	if ex && (!fi.IsDir() || !c.hasExclusions()) {
		return nil, nil
	}
	self := []Entry{{Rel: rel, Info: fi}}
	if !fi.IsDir() {
		return self, nil
	}
	children, err := c.walk(ctx, rel)
	if err != nil || (ex && len(children) == 0) {
		return nil, err
	}
	return append(self, children...), nil
}
