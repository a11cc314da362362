package executor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"syscall"

	"github.com/builder-dev/builder/internal/buildcontext"
	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/patternmatcher"
	"golang.org/x/sys/unix"
)

// addParents selects the source of a COPY --parents. As BuildKit does, the
// part of src before a "/./" pivot (the root without one) is a directory
// whose contents are copied into dest filtered by the rest of src, an
// include pattern (patternmatcher: a match takes everything below it, "**"
// spans directories): "a/./b/c.txt" is written at <dest>/b/c.txt,
// "a/b/c.txt" at <dest>/a/b/c.txt. Wildcards may stand on either side of
// the pivot; each pivot the left side matches is copied, so dest is made
// even when nothing below it matches.
func (p *copyPlan) addParents(ctx context.Context, tree *buildcontext.Context, i int, src string) error {
	pivotPattern, pattern := copySplitPivot(src)
	pivots, err := copyGlob(ctx, tree, pivotPattern)
	if err != nil {
		return err
	}
	// Like BuildKit's RequiredPaths: a literal path must exist only when
	// no wildcard stands on either side of the pivot.
	required := !buildcontext.HasMeta(pivotPattern) && !buildcontext.HasMeta(pattern)
	for _, pivot := range pivots {
		pivot = buildcontext.Clean(pivot)
		if !required {
			done, err := p.addFilePivot(ctx, tree, i, pivot)
			if err != nil {
				return err
			}
			if done {
				continue
			}
		}
		p.pivots = append(p.pivots, copyPivot{index: i, pivot: pivot})
		matches, err := p.parentsMatches(ctx, tree, pivot, pattern)
		if err != nil {
			return err
		}
		if required && len(matches) == 0 {
			return fmt.Errorf("%q: %w", "/"+path.Join(pivot, pattern), buildcontext.ErrNotFound)
		}
		for _, m := range matches {
			err := p.addParentsMatch(ctx, tree, i, pivot, buildcontext.Clean(path.Join(pivot, m)))
			if err != nil && (required || !errors.Is(err, buildcontext.ErrNotFound)) {
				return err
			}
		}
	}
	return nil
}

// addFilePivot copies a pivot that is not a directory as a plain source,
// whatever the pattern says: fsutil's copy always takes its source root
// (COPY --parents /a/*/./**/h copies the files in /a, BuildKit
// v0.34.2). It reports whether pivot was one.
func (p *copyPlan) addFilePivot(ctx context.Context, tree *buildcontext.Context, i int, pivot string) (bool, error) {
	rel, err := tree.Resolve(pivot)
	if errors.Is(err, buildcontext.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	fi, err := tree.Lstat(rel)
	if err != nil {
		return false, fmt.Errorf("stat %q: %w", "/"+pivot, err)
	}
	if fi.IsDir() {
		return false, nil
	}
	return true, p.appendSource(ctx, tree, &copySource{index: i, written: pivot, name: path.Base(pivot)}, rel)
}

// parentsMatches returns what pattern selects below pivot, relative to it:
// a literal pattern names one path (checked when it is added), a pattern
// with wildcards the topmost entries it or --exclude's complement matches,
// in walk order. Symlinks below the pivot are not followed.
func (p *copyPlan) parentsMatches(ctx context.Context, tree *buildcontext.Context, pivot, pattern string) ([]string, error) {
	pattern = buildcontext.Clean(pattern)
	if pattern == "." {
		return nil, nil // "a/./": BuildKit's empty include pattern selects nothing
	}
	if !buildcontext.HasMeta(pattern) {
		if ex, err := p.excluded(pattern); err != nil || ex {
			return nil, err
		}
		return []string{pattern}, nil
	}
	pm, err := patternmatcher.New([]string{pattern})
	if err != nil {
		return nil, fmt.Errorf("--parents pattern %q: %w", pattern, err)
	}
	root, err := tree.Resolve(pivot) // a missing literal pivot is an error
	if err != nil {
		return nil, err
	}
	// Walk from the pattern's literal leading directories only.
	start := root
	comps := strings.Split(pattern, "/")
	for _, comp := range comps[:len(comps)-1] {
		if buildcontext.HasMeta(comp) {
			break
		}
		start = path.Join(start, comp)
		fi, err := tree.Lstat(start)
		if err != nil || !fi.IsDir() {
			return nil, nil // missing, or a symlink BuildKit's copy does not enter
		}
	}
	entries, err := tree.Walk(ctx, start)
	if err != nil {
		return nil, err
	}
	var out []string
	last := "" // the latest match: the walk lists its subtree next
	for _, e := range entries {
		rel, ok := copyRelTo(e.Rel, root)
		if !ok || (last != "" && strings.HasPrefix(rel, last+"/")) {
			continue
		}
		if ex, err := p.excluded(rel); err != nil || ex {
			if err != nil {
				return nil, err
			}
			continue
		}
		ok, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return nil, fmt.Errorf("match --parents pattern %q against %s: %w", pattern, rel, err)
		}
		if ok {
			out, last = append(out, rel), rel
		}
	}
	return out, nil
}

func (p *copyPlan) addParentsMatch(ctx context.Context, tree *buildcontext.Context, i int, pivot, m string) error {
	name, ok := copyRelTo(m, pivot)
	if !ok {
		return fmt.Errorf("source %q: not below its pivot %q", "/"+m, "/"+pivot)
	}
	rel, err := copyResolveParent(tree, m)
	if err != nil {
		return err
	}
	s := &copySource{index: i, written: m, name: name, pivot: pivot}
	if s.parents, err = copyParentDirs(tree, pivot, name); err != nil {
		return err
	}
	return p.appendSource(ctx, tree, s, rel)
}

// copySplitPivot splits a --parents source at its first "/./".
func copySplitPivot(src string) (pivot, pattern string) {
	if before, after, ok := strings.Cut(src, "/./"); ok {
		return buildcontext.Clean(before), after
	}
	return ".", src
}

// copyRelTo returns the clean path m relative to its ancestor dir.
func copyRelTo(m, dir string) (string, bool) {
	switch {
	case dir == ".":
		return m, true
	case m == dir:
		return ".", true
	}
	rest, ok := strings.CutPrefix(m, dir+"/")
	return rest, ok
}

// copyResolveParent resolves the directory of m inside the tree but not
// its final component: --parents copies a matched symlink as a symlink.
func copyResolveParent(tree *buildcontext.Context, m string) (string, error) {
	if m == "." {
		return ".", nil
	}
	dir, err := tree.Resolve(path.Dir(m))
	if err != nil {
		return "", err
	}
	rel := path.Join(dir, path.Base(m))
	if _, err := tree.Lstat(rel); err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, buildcontext.ErrNotFound) {
			return "", fmt.Errorf("%q: %w", "/"+m, buildcontext.ErrNotFound)
		}
		return "", fmt.Errorf("stat %q: %w", "/"+m, err)
	}
	return rel, nil
}

// copyParentDirs describes the directories between pivot and its
// descendant name, outermost first, each with rel relative to the
// destination.
func copyParentDirs(tree *buildcontext.Context, pivot, name string) ([]copyEntry, error) {
	var dirs []string
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		dirs = append(dirs, d)
	}
	out := make([]copyEntry, 0, len(dirs))
	for i := len(dirs) - 1; i >= 0; i-- {
		rel, err := tree.Resolve(path.Join(pivot, dirs[i]))
		if err != nil {
			return nil, err
		}
		fi, err := tree.Lstat(rel)
		if err != nil {
			return nil, fmt.Errorf("stat %q: %w", "/"+path.Join(pivot, dirs[i]), err)
		}
		e, err := copyEntryOf(tree, dirs[i], rel, fi)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// applyParents writes a --parents source at <dest>/<name>. Missing
// directories between dest and it take the metadata of their source
// directories (BuildKit's createParentDirs); it returns them, with rel
// inside rootfs, so that their times are set after every source is in.
// An existing one, from the image or an earlier source, takes its source
// directory's mode and keeps its owner, as buildkitd leaves it.
func (p *copyPlan) applyParents(ctx context.Context, rootfs string, s *copySource, own copyOwner) ([]copyEntry, error) {
	if err := mkdirAllIn(rootfs, p.dest, p.dirMode(), own); err != nil {
		return nil, err
	}
	var created []copyEntry
	for _, d := range s.parents {
		at := path.Join(p.dest, d.rel)
		ok, err := copyIsDir(rootfs, at)
		if err != nil {
			return nil, err
		}
		if ok {
			// Resolved inside rootfs, a symlink on the way included: the
			// directory copyIsDir found.
			host, err := securejoin.SecureJoin(rootfs, at)
			if err != nil {
				return nil, fmt.Errorf("resolve %s in rootfs: %w", at, err)
			}
			if err := unix.Chmod(host, copyModeBits(d.mode)); err != nil {
				return nil, fmt.Errorf("chmod %s: %w", at, err)
			}
			continue
		}
		if err := p.writeEntry(rootfs, at, s, d, own); err != nil {
			return nil, err
		}
		d.rel = at
		created = append(created, d)
	}
	// The match itself is copied like any entry below a pivot: with its
	// source's metadata, over an existing directory's (fsutil's
	// overwriteTargetMetadata below the top).
	dirs, err := p.writeTree(ctx, rootfs, path.Join(p.dest, s.name), s, s.entries, own)
	if err != nil {
		return nil, err
	}
	return append(created, dirs...), nil
}
