package buildcontext

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
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
// when something below it is. Directories are read and their entries
// stat'ed in parallel (2×GOMAXPROCS at a time).
func (c *Context) Walk(ctx context.Context, rel string) ([]Entry, error) {
	w := &walker{c: c, ctx: ctx, slots: make(chan struct{}, 2*runtime.GOMAXPROCS(0))}
	return w.walk(Clean(rel))
}

// walkBatch is how many entries of one directory a walker goroutine stats.
const walkBatch = 64

// walker is one Walk. slots bounds its extra goroutines; work that finds
// no free slot runs inline, so nested fan-outs never deadlock.
type walker struct {
	c     *Context
	ctx   context.Context
	slots chan struct{}
}

// parallel calls fn(0..n-1), each on a new goroutine while a slot is free
// and inline otherwise, and returns the error of the lowest index.
func (w *walker) parallel(n int, fn func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case w.slots <- struct{}{}:
			wg.Add(1)
			go func() {
				defer func() { <-w.slots; wg.Done() }()
				errs[i] = fn(i)
			}()
		default:
			errs[i] = fn(i)
		}
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) walk(dir string) ([]Entry, error) {
	names, err := w.c.readDirNames(dir)
	if err != nil {
		return nil, err
	}
	infos, err := w.lstatAll(dir, names)
	if err != nil {
		return nil, err
	}
	lists := make([][]Entry, len(names))
	var dirs []int
	for i, name := range names {
		rel := path.Join(dir, name)
		ex, err := w.c.Excluded(rel)
		if err != nil {
			return nil, err
		}
		switch {
		case infos[i].IsDir() && (!ex || w.c.hasExclusions()):
			dirs = append(dirs, i)
		case !ex && !infos[i].IsDir():
			lists[i] = []Entry{{Rel: rel, Info: infos[i]}}
		}
	}
	err = w.parallel(len(dirs), func(j int) error {
		i := dirs[j]
		rel := path.Join(dir, names[i])
		children, err := w.walk(rel)
		if err != nil {
			return err
		}
		if ex, _ := w.c.Excluded(rel); ex && len(children) == 0 {
			return nil
		}
		lists[i] = append([]Entry{{Rel: rel, Info: infos[i]}}, children...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, l := range lists {
		out = append(out, l...)
	}
	return out, nil
}

// lstatAll stats the entries names of dir, in batches of walkBatch.
func (w *walker) lstatAll(dir string, names []string) ([]fs.FileInfo, error) {
	infos := make([]fs.FileInfo, len(names))
	err := w.parallel((len(names)+walkBatch-1)/walkBatch, func(b int) error {
		for i := b * walkBatch; i < min(len(names), (b+1)*walkBatch); i++ {
			if err := w.ctx.Err(); err != nil {
				return err
			}
			rel := path.Join(dir, names[i])
			fi, err := os.Lstat(w.c.HostPath(rel))
			if err != nil {
				return fmt.Errorf("lstat %q: %w", "/"+rel, err)
			}
			infos[i] = fi
		}
		return nil
	})
	return infos, err
}
