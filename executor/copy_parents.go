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
)

// addParents selects the source of a COPY --parents. As in BuildKit, the
// part of src before a "/./" pivot (the root without one) is dropped from
// the destination path and the rest is kept: "a/./b/c.txt" is written at
// <dest>/b/c.txt, "a/b/c.txt" at <dest>/a/b/c.txt. Wildcards may stand on
// either side of the pivot.
func (p *copyPlan) addParents(ctx context.Context, tree *buildcontext.Context, i int, src string) error {
	pivotPattern, pattern := copySplitPivot(src)
	pivots, err := copyGlob(ctx, tree, pivotPattern)
	if err != nil {
		return err
	}
	// Like BuildKit's RequiredPaths: a literal path must exist only when
	// no wildcard stands on either side of the pivot.
	optional := buildcontext.HasMeta(pivotPattern)
	for _, pivot := range pivots {
		pivot = buildcontext.Clean(pivot)
		matches, err := copyGlob(ctx, tree, path.Join(pivot, pattern))
		if err != nil {
			return err
		}
		for _, m := range matches {
			err := p.addParentsMatch(ctx, tree, i, pivot, buildcontext.Clean(m))
			if err != nil && !(optional && errors.Is(err, buildcontext.ErrNotFound)) {
				return err
			}
		}
	}
	return nil
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
func (p *copyPlan) applyParents(ctx context.Context, rootfs string, s *copySource, own copyOwner) ([]copyEntry, error) {
	if err := copyMkdirAll(rootfs, p.dest, own); err != nil {
		return nil, err
	}
	var created []copyEntry
	for _, d := range s.parents {
		at := path.Join(p.dest, d.rel)
		ok, err := copyIsDir(rootfs, at)
		if err != nil || ok {
			if err != nil {
				return nil, err
			}
			continue
		}
		if err := p.writeEntry(rootfs, at, s, d, own, nil); err != nil {
			return nil, err
		}
		d.rel = at
		created = append(created, d)
	}
	dst := path.Join(p.dest, s.name)
	if s.entries[0].kind == copyDir {
		return created, p.applyTree(ctx, rootfs, dst, s, own)
	}
	return created, p.writeEntry(rootfs, dst, s, s.entries[0], own, nil)
}
