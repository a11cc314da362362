package executor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// A COPY into an overlay snapshot pays overlayfs for every file it
// creates: the mounted root's creations cost about twice a plain file
// system's (BenchmarkColdCopy). A directory the step makes, though, exists
// only in the snapshot's own (upper) directory, so what goes into it can be
// written there directly. ApplyDirect makes the directories through the
// mounted root, as Apply does (overlayfs copies their parents up), and
// leaves the other entries of the directories it made, and those
// directories' times, to the finish it returns, which the executor runs on
// the upper directory once the root is unmounted: overlayfs allows changes
// to its layers only while it is not mounted.

// upperWrites is what ApplyDirect leaves for the upper directory.
type upperWrites struct {
	root string          // the mounted root the host paths below are in
	made map[string]bool // host paths of the directories this step made
	// groups are the sources' writes, in order: each one's entries at
	// distinct paths, written in parallel; a later source's entry may
	// replace an earlier one's.
	groups []*upperGroup
	// pending finds an entry left for the upper directory by its host
	// path, so that a directory made there later in the mounted root
	// replaces it, as it would replace the file written there.
	pending map[string]*upperEntry
}

// upperGroup is one source's writes into the upper directory.
type upperGroup struct {
	s       *copySource
	entries []*upperEntry
	// dirs are the directories it made (rel: their host path), whose
	// times are set once everything is in, the last made first, after
	// those of the groups before.
	dirs []copyEntry
}

// upperEntry is one entry to write at host (in the mounted root), dst its
// path in the image.
type upperEntry struct {
	host, dst string
	e         *copyEntry
	own       copyOwner
	dropped   bool
}

// direct reports whether the plan's writes may be split between the
// mounted root and the upper directory: sources that are local directory
// trees without hardlinks (a hardlink's first name may be anywhere, and
// archives, Git checkouts, downloads and --parents write their own way).
func (p *copyPlan) direct() bool {
	if len(p.pivots) > 0 {
		return false
	}
	for _, s := range p.sources {
		if s.git != nil || s.archive || s.url != nil || s.data != nil || s.pivot != "" ||
			len(s.entries) == 0 || s.entries[0].kind != copyDir {
			return false
		}
		for i := range s.entries {
			if s.entries[i].kind == copyHardlink {
				return false
			}
		}
	}
	return true
}

// ApplyDirect is Apply for a snapshot whose changes are kept in a
// directory of their own (snapshot.UpperDirer): it returns the writes left
// for that directory, to run once rootfs is unmounted, or nil when it
// wrote everything into rootfs.
func (p *copyPlan) ApplyDirect(ctx context.Context, rootfs string) (func(ctx context.Context, upper string) error, error) {
	if !p.direct() {
		return nil, p.Apply(ctx, rootfs)
	}
	w := &upperWrites{root: rootfs, made: map[string]bool{}, pending: map[string]*upperEntry{}}
	p.upper = w
	defer func() { p.upper = nil }()
	if err := p.Apply(ctx, rootfs); err != nil {
		return nil, err
	}
	return func(ctx context.Context, upper string) error { return p.finishUpper(ctx, w, upper) }, nil
}

// group is the group of source s, the last one.
func (w *upperWrites) group(s *copySource) *upperGroup {
	if n := len(w.groups); n > 0 && w.groups[n-1].s == s {
		return w.groups[n-1]
	}
	g := &upperGroup{s: s}
	w.groups = append(w.groups, g)
	return g
}

// mkdir is called before a directory is made or kept at host in the
// mounted root: it reports whether the directory is (or will be) one this
// step made, and drops an entry left for host, which the directory
// replaces.
func (w *upperWrites) mkdir(host string) bool {
	if w.made[host] {
		return true
	}
	if u := w.pending[host]; u != nil {
		u.dropped = true
		delete(w.pending, host)
		return true
	}
	fi, err := os.Lstat(host)
	return errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.IsDir())
}

// makesDir reports whether a directory made at host by mkdirAllIn (which
// follows a symlink there) is one this step makes: nothing is there yet.
func (w *upperWrites) makesDir(host string) bool {
	if w.made[host] {
		return true
	}
	_, err := os.Lstat(host)
	return errors.Is(err, fs.ErrNotExist)
}

// madeDir records that the directory at host, entry e of source s, was made
// by this step: its entries go to the upper directory, and its times are
// set there once they are in.
func (w *upperWrites) madeDir(s *copySource, host string, e copyEntry) {
	w.made[host] = true
	e.rel = host
	g := w.group(s)
	g.dirs = append(g.dirs, e)
}

// leave keeps entry e of source s, to be written at host, for the upper
// directory when its parent is a directory this step made.
func (w *upperWrites) leave(s *copySource, host, dst string, e *copyEntry, own copyOwner) bool {
	if !w.made[filepath.Dir(host)] {
		return false
	}
	u := &upperEntry{host: host, dst: dst, e: e, own: own}
	if old := w.pending[host]; old != nil {
		old.dropped = true // replaced, in the group order
	}
	w.pending[host] = u
	g := w.group(s)
	g.entries = append(g.entries, u)
	return true
}

// rel is host's path below the mounted root.
func (w *upperWrites) rel(host string) (string, error) {
	rel, err := filepath.Rel(w.root, host)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("copy: %s is not below the root %s", host, w.root)
	}
	return rel, nil
}

// finishUpper writes what w left into upper, the snapshot's directory:
// each group's entries in parallel, the groups in order, then the
// directories' times. Each parent is resolved inside upper and must be the
// directory the step made there (no symlink on the way).
func (p *copyPlan) finishUpper(ctx context.Context, w *upperWrites, upper string) error {
	parents := map[string]string{} // host parent → its path in upper
	at := func(host string) (string, error) {
		dir := filepath.Dir(host)
		if up, ok := parents[dir]; ok {
			return filepath.Join(up, filepath.Base(host)), nil
		}
		rel, err := w.rel(dir)
		if err != nil {
			return "", err
		}
		want := filepath.Join(upper, rel)
		got, err := securejoin.SecureJoin(upper, rel)
		if err != nil || got != want {
			return "", fmt.Errorf("copy: %s in the snapshot's directory is not the directory made for it (%v)", rel, err)
		}
		parents[dir] = want
		return filepath.Join(want, filepath.Base(host)), nil
	}
	cp := &copier{}
	for _, g := range w.groups {
		var jobs []copyJob
		for _, u := range g.entries {
			if u.dropped {
				continue
			}
			host, err := at(u.host)
			if err != nil {
				return err
			}
			jobs = append(jobs, copyJob{dir: filepath.Dir(host), run: func(context.Context) error {
				return p.writeEntryAt(cp, host, u.dst, g.s, u.e, u.own, "")
			}})
		}
		if err := copyParallel(ctx, copyInterleave(jobs)); err != nil {
			return err
		}
	}
	for _, g := range w.groups {
		for i := len(g.dirs) - 1; i >= 0; i-- {
			rel, err := w.rel(g.dirs[i].rel)
			if err != nil {
				return err
			}
			if err := copyTimes(filepath.Join(upper, rel), g.dirs[i].mtime); err != nil {
				return err
			}
		}
	}
	return nil
}
