package buildcontext

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/fuzztest"
)

// fuzzTree is the context FuzzDockerignore matches against: testTree plus
// names that look like pattern syntax. The .dockerignore is written per
// input.
var fuzzTree = func() map[string]string {
	m := map[string]string{
		"Dockerfile": "FROM scratch", "node_modules/pkg/index.js": "js", ".git/HEAD": "ref",
		"dir with space/file": "f", "[brackets]": "b", "star*name": "s", `back\slash`: "b",
		"a/b/c/d/e.txt": "e", "!bang": "!", "#hash": "#", "sub/deep/.hidden": "h",
	}
	for k, v := range testTree {
		m[k] = v
	}
	// Resolving a link of a loop follows 255 links: the loop lives one
	// level down, so that globbing "*" stays cheap.
	delete(m, "loop1")
	delete(m, "loop2")
	m["loops/a"], m["loops/b"] = "->b", "->a"
	return m
}()

// fuzzMaxPaths and fuzzMaxPatterns bound the work of one input: every
// path is matched against every pattern for each of its parents.
const (
	fuzzMaxPaths    = 4
	fuzzMaxPatterns = 16
)

// FuzzDockerignore reads a fuzzed .dockerignore (ReadIgnore, then Open),
// or, when raw is set, opens the context with its raw lines as patterns
// (Open's own normalization), then matches, walks, resolves and globs fuzzed
// paths in a fixed tree. It checks: no panic; bounded time and
// allocation; "." is never excluded; Walk lists entries inside the root,
// each once, parents first, and exactly the non-directory entries that
// Excluded does not exclude; a resolved path stays inside the root and is
// not an excluded file; every Glob match resolves. Seeds:
// testdata/fuzz/FuzzDockerignore (see TestFuzzSeeds).
func FuzzDockerignore(f *testing.F) {
	scratch := fuzztest.ScratchDir(f)
	var root string
	var files []string // every non-directory below root but .dockerignore
	bounds := fuzztest.Bounds{Timeout: 5 * time.Second, Grace: 3 * time.Second, MaxAlloc: 256 << 20}
	f.Fuzz(func(t *testing.T, ignore []byte, paths string, raw bool) {
		if root == "" {
			root, files = fuzzMakeTree(t, scratch)
		}
		if lines := bytes.SplitAfter(ignore, []byte("\n")); len(lines) > fuzzMaxPatterns {
			ignore = bytes.Join(lines[:fuzzMaxPatterns], nil)
		}
		if err := os.WriteFile(filepath.Join(root, ".dockerignore"), ignore, 0o644); err != nil {
			t.Fatal(err)
		}
		queries := strings.Split(paths, "\n")
		if len(queries) > fuzzMaxPaths {
			queries = queries[:fuzzMaxPaths]
		}
		fuzztest.Run(t, bounds, func(ctx context.Context) {
			if raw {
				fuzzContext(ctx, t, root, strings.Split(string(ignore), "\n"), files, queries)
				return
			}
			if patterns, err := ReadIgnore(root, ""); err == nil {
				fuzzContext(ctx, t, root, patterns, files, queries)
			}
		})
	})
}

// fuzzMakeTree writes fuzzTree below dir and lists its non-directories.
func fuzzMakeTree(t *testing.T, dir string) (string, []string) {
	root := filepath.Join(dir, "ctx")
	mustWrite(t, filepath.Join(dir, "victim", "secret"), "host secret")
	for p, v := range fuzzTree {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(p, "/"):
			err := os.MkdirAll(full, 0o755)
			if err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(v, "->"):
			if err := os.Symlink(v[2:], full); err != nil {
				t.Fatal(err)
			}
		default:
			mustWrite(t, full, v)
		}
	}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return root, append(files, ".dockerignore")
}

func fuzzContext(ctx context.Context, t *testing.T, root string, patterns, files, queries []string) {
	t.Helper()
	c, err := Open(root, patterns)
	if err != nil {
		return // malformed patterns: the build fails with this error
	}
	if ex, err := c.Excluded("."); ex || err != nil {
		t.Fatalf("patterns %q exclude the root: %v, %v", patterns, ex, err)
	}
	excluded := map[string]bool{}
	for _, f := range files {
		ex, err := c.Excluded(f)
		if err != nil {
			return // a pattern that fails to compile fails every build step
		}
		excluded[f] = ex
	}
	entries, err := c.Walk(ctx, ".")
	if err != nil {
		// A pattern compiles when a path first reaches it (patternmatcher,
		// as in BuildKit): one no file reached may fail on a directory.
		if ctx.Err() == nil && !errors.Is(err, filepath.ErrBadPattern) {
			t.Fatalf("Walk with patterns %q: %v", patterns, err)
		}
		return
	}
	fuzzCheckWalk(t, c, patterns, entries, files, excluded)
	for _, q := range queries {
		if _, err := c.Excluded(q); err != nil {
			// A pattern no file of the tree reached may fail on q
			// (`*`, `!*o`, then a bad escape: only a name ending in
			// "o" reaches the third).
			if errors.Is(err, filepath.ErrBadPattern) {
				continue
			}
			t.Fatalf("Excluded(%q) failed after the patterns matched: %v", q, err)
		}
		if rel, err := c.Resolve(q); err == nil {
			fuzzCheckResolved(t, c, q, rel)
		}
		if !HasMeta(q) {
			continue // Glob is Resolve then
		}
		matches, err := c.Glob(ctx, q)
		if err != nil {
			continue // bad pattern syntax
		}
		for _, m := range matches {
			if _, err := c.Resolve(m); err != nil {
				t.Fatalf("Glob(%q) matched %q, which does not resolve: %v", q, m, err)
			}
		}
	}
}

func fuzzCheckWalk(t *testing.T, c *Context, patterns []string, entries []Entry, files []string, excluded map[string]bool) {
	t.Helper()
	seen := map[string]bool{}
	var listed []string
	for _, e := range entries {
		if e.Rel == "." || Clean(e.Rel) != e.Rel || seen[e.Rel] {
			t.Fatalf("Walk entry %q is the root, not clean or listed twice", e.Rel)
		}
		if dir := path.Dir(e.Rel); dir != "." && !seen[dir] {
			t.Fatalf("Walk lists %q before its directory", e.Rel)
		}
		seen[e.Rel] = true
		if e.Info.IsDir() {
			if ex, _ := c.Excluded(e.Rel); ex && !c.hasExclusions() {
				t.Fatalf("Walk lists the excluded directory %q (patterns %q)", e.Rel, patterns)
			}
			continue
		}
		listed = append(listed, e.Rel)
	}
	var want []string
	for _, f := range files {
		if !excluded[f] {
			want = append(want, f)
		}
	}
	slices.Sort(listed)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Fatalf("patterns %q: Walk lists files %q, Excluded leaves %q", patterns, listed, want)
	}
}

func fuzzCheckResolved(t *testing.T, c *Context, q, rel string) {
	t.Helper()
	if Clean(rel) != rel {
		t.Fatalf("Resolve(%q) = %q, not clean", q, rel)
	}
	host := c.HostPath(rel)
	if host != c.Root() && !strings.HasPrefix(host, c.Root()+string(filepath.Separator)) {
		t.Fatalf("Resolve(%q) = %q, outside the root", q, host)
	}
	fi, err := os.Lstat(host)
	if err != nil {
		t.Fatalf("Resolve(%q) = %q, which does not exist: %v", q, rel, err)
	}
	if ex, _ := c.Excluded(rel); ex && (!fi.IsDir() || !c.hasExclusions()) {
		t.Fatalf("Resolve(%q) = %q, which is excluded", q, rel)
	}
}
