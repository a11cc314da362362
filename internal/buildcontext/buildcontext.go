// Package buildcontext gives confined, ignore-aware access to a source tree:
// the build context directory of `builder build`, or the root of a
// `COPY --from` stage or image (opened without ignore rules).
//
// Every path a caller passes is resolved inside the root: ".." and absolute
// paths are clamped to it, and symlinks met while resolving a source path are
// followed inside the root (securejoin), never outside. Entries excluded by
// the ignore patterns behave exactly as if absent: they are not found, not
// listed, not globbed and not followed through. As in BuildKit, the
// .dockerignore file and the Dockerfile are ordinary entries, present unless
// the patterns exclude them.
//
// A Context is immutable after Open and safe for concurrent use.
package buildcontext

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/patternmatcher"
)

// ErrNotFound reports a source path that does not exist or is excluded.
var ErrNotFound = errors.New("not found")

// Context is a source tree rooted at a directory.
type Context struct {
	root string
	// matcher compiles its patterns lazily on first use, which is not
	// safe for concurrent use: mu guards every call.
	mu      sync.Mutex
	matcher *patternmatcher.PatternMatcher // nil without patterns
}

// Open returns the Context rooted at dir with the given .dockerignore
// patterns (as returned by ReadIgnore; nil for none).
func Open(dir string, ignorePatterns []string) (*Context, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open context %s: %w", dir, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("open context %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open context %s: not a directory", dir)
	}
	c := &Context{root: abs}
	if len(ignorePatterns) > 0 {
		patterns, err := normalizePatterns(ignorePatterns)
		if err == nil {
			c.matcher, err = patternmatcher.New(patterns)
		}
		if err != nil {
			return nil, fmt.Errorf("parse ignore patterns of %s: %w", dir, err)
		}
	}
	return c, nil
}

// normalizePatterns applies ignorefile.ReadAll's cleaning to patterns that
// did not come through it: a leading "/" is stripped and paths are cleaned.
func normalizePatterns(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, p := range in {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimSpace(strings.TrimPrefix(p, "!"))
		if p == "" {
			return nil, errors.New(`illegal exclusion pattern: "!"`)
		}
		p = filepath.Clean(p)
		if p != "/" {
			p = strings.TrimPrefix(p, "/")
		}
		if neg {
			p = "!" + p
		}
		out = append(out, p)
	}
	return out, nil
}

// Root returns the absolute host path of the context directory.
func (c *Context) Root() string { return c.root }

// Excluded reports whether the ignore patterns exclude rel (a slash or
// OS separated path relative to the root; "." is never excluded).
func (c *Context) Excluded(rel string) (bool, error) {
	rel = Clean(rel)
	if c.matcher == nil || rel == "." {
		return false, nil
	}
	c.mu.Lock()
	ok, err := c.matcher.MatchesOrParentMatches(filepath.FromSlash(rel))
	c.mu.Unlock()
	if err != nil {
		return false, fmt.Errorf("match ignore patterns against %s: %w", rel, err)
	}
	return ok, nil
}

// hasExclusions reports whether "!" patterns may re-include entries under
// an excluded directory.
func (c *Context) hasExclusions() bool {
	return c.matcher != nil && c.matcher.Exclusions()
}

// Clean clamps p to the root: it returns a slash-separated relative path
// without ".." components ("." for the root itself).
func Clean(p string) string {
	p = path.Clean("/" + filepath.ToSlash(p))
	if p == "/" {
		return "."
	}
	return p[1:]
}

// HostPath returns the host path of rel, which must already be resolved
// (from Resolve, Glob or Walk); it does not follow symlinks itself.
func (c *Context) HostPath(rel string) string {
	rel = Clean(rel)
	if rel == "." {
		return c.root
	}
	return filepath.Join(c.root, filepath.FromSlash(rel))
}

// Lstat describes the resolved entry rel without following a final symlink.
func (c *Context) Lstat(rel string) (fs.FileInfo, error) {
	return c.vfs().Lstat(c.HostPath(rel))
}

// Open opens the resolved regular file rel for reading; a symlink in its
// final component is refused rather than followed.
func (c *Context) Open(rel string) (*os.File, error) {
	if ex, err := c.Excluded(rel); err != nil || ex {
		return nil, notFound(rel, err)
	}
	f, err := os.OpenFile(c.HostPath(rel), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", "/"+Clean(rel), err)
	}
	return f, nil
}

// Resolve resolves a source path as written in COPY/ADD inside the root,
// following every symlink (including the last component, as COPY does for
// its top-level sources) within the root. It returns the resolved relative
// path, or an error wrapping ErrNotFound naming the path as written.
func (c *Context) Resolve(src string) (string, error) {
	clean := Clean(src)
	p, err := securejoin.SecureJoinVFS(c.root, clean, c.vfs())
	if err != nil {
		return "", fmt.Errorf("resolve %q: %w", "/"+clean, err)
	}
	rel, err := filepath.Rel(c.root, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("resolve %q: outside the context", "/"+clean)
	}
	rel = Clean(rel)
	if _, err := c.Lstat(rel); err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return "", notFound(clean, nil)
		}
		return "", fmt.Errorf("stat %q: %w", "/"+clean, err)
	}
	return rel, nil
}

func notFound(rel string, err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%q: %w", "/"+Clean(rel), ErrNotFound)
}

// vfs is the view of the root through the ignore rules, for securejoin.
func (c *Context) vfs() ignoreVFS { return ignoreVFS{c} }

type ignoreVFS struct{ c *Context }

func (v ignoreVFS) visible(name string) error {
	rel, err := filepath.Rel(v.c.root, name)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil // outside the root: securejoin never asks; leave to the OS
	}
	ex, err := v.c.Excluded(rel)
	if err != nil {
		return err
	}
	if ex && !v.c.hasExclusions() {
		return &fs.PathError{Op: "lstat", Path: name, Err: fs.ErrNotExist}
	}
	if ex {
		return v.excludedDir(name)
	}
	return nil
}

// excludedDir lets an excluded directory stay traversable when "!"
// patterns may re-include something below it; anything else is absent.
func (v ignoreVFS) excludedDir(name string) error {
	fi, err := os.Lstat(name)
	if err == nil && fi.IsDir() {
		return nil
	}
	return &fs.PathError{Op: "lstat", Path: name, Err: fs.ErrNotExist}
}

func (v ignoreVFS) Lstat(name string) (os.FileInfo, error) {
	if err := v.visible(name); err != nil {
		return nil, err
	}
	return os.Lstat(name)
}

func (v ignoreVFS) Readlink(name string) (string, error) {
	if err := v.visible(name); err != nil {
		return "", err
	}
	return os.Readlink(name)
}
