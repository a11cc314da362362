package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/snapshot"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/patternmatcher"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

func (p *copyPlan) addSource(ctx context.Context, tree *buildcontext.Context, i int, src string) error {
	if ok, err := p.addGitSource(ctx, i, src); ok {
		return err
	}
	if addIsURL(src) {
		// A download ADD may extract is needed now: its content decides.
		lazy := p.req.Unpack == nil || !*p.req.Unpack
		dl, err := p.fetcher().resolve(ctx, src, p.req.Checksum, lazy)
		if err != nil {
			return err
		}
		p.sources = append(p.sources, &copySource{index: i, written: src, name: dl.name, url: dl,
			entries: []copyEntry{{kind: copyFile, mode: 0o600, mtime: dl.modTime, digest: dl.digest, host: dl.file}}})
		return nil
	}
	if tree == nil {
		return fmt.Errorf("source %q: no build context", src)
	}
	if p.req.Parents {
		return p.addParents(ctx, tree, i, src)
	}
	matches, err := copyGlob(ctx, tree, src)
	if err != nil {
		return err
	}
	for _, m := range matches {
		// A top-level symlink is followed, as Docker does.
		rel, err := tree.Resolve(m)
		if err != nil {
			return err
		}
		s := &copySource{index: i, written: m, name: path.Base(buildcontext.Clean(m))}
		if err := p.appendSource(ctx, tree, s, rel); err != nil {
			return err
		}
	}
	return nil
}

func (p *copyPlan) fetcher() *addFetcher {
	return &addFetcher{client: p.req.HTTPClient, tempDir: p.req.TempDir, memo: p.req.URLMemo}
}

// copyGlob expands src when it holds wildcards.
func copyGlob(ctx context.Context, tree *buildcontext.Context, src string) ([]string, error) {
	if !buildcontext.HasMeta(src) {
		return []string{src}, nil
	}
	return tree.Glob(ctx, src)
}

// appendSource lists what the resolved entry rel selects into s and adds
// s to the plan.
//
// --exclude matches paths below the copied root, as fsutil's copy does: a
// source's own name never (COPY --exclude=*.txt a.txt copies a.txt), the
// entries below a --parents pivot by their path from the pivot.
func (p *copyPlan) appendSource(ctx context.Context, tree *buildcontext.Context, s *copySource, rel string) error {
	fi, err := tree.Lstat(rel)
	if err != nil {
		return fmt.Errorf("stat %q: %w", "/"+buildcontext.Clean(s.written), err)
	}
	top, err := copyEntryOf(tree, "", rel, fi)
	if err != nil {
		return err
	}
	s.entries = []copyEntry{top}
	if top.kind == copyDir {
		if err := p.selectDir(ctx, tree, s, rel); err != nil {
			return err
		}
	}
	if err := p.followTopLinks(tree, s, rel); err != nil {
		return err
	}
	p.sources = append(p.sources, s)
	return nil
}

// followTopLinks fails a copy of the whole tree with --exclude when a
// symlink directly below the root, and not excluded, leads nowhere in the
// tree, as BuildKit does: with exclude patterns it checksums the root's
// entries with their links followed (contenthash includedPaths: an entry
// without a parent directory header follows links). The symlinks are
// still copied as they are.
func (p *copyPlan) followTopLinks(tree *buildcontext.Context, s *copySource, rel string) error {
	if rel != "." || len(p.req.Exclude) == 0 || s.pivot != "" {
		return nil
	}
	for _, e := range s.entries {
		if e.kind != copySymlink || strings.Contains(e.rel, "/") {
			continue
		}
		if _, err := tree.Resolve(e.rel); err != nil {
			return err
		}
	}
	return nil
}

func (p *copyPlan) selectDir(ctx context.Context, tree *buildcontext.Context, s *copySource, rel string) error {
	entries, err := tree.Walk(ctx, rel)
	if err != nil {
		return err
	}
	seen := map[[2]uint64]string{}
	s.entries = slices.Grow(s.entries, len(entries))
	for _, e := range entries {
		sub := e.Rel
		if rel != "." {
			sub = strings.TrimPrefix(e.Rel, rel+"/")
		}
		match := sub
		if s.pivot != "" && s.name != "." {
			match = path.Join(s.name, sub)
		}
		if ex, err := p.excluded(match); err != nil || ex {
			if err != nil {
				return err
			}
			continue
		}
		ce, err := copyEntryOf(tree, sub, e.Rel, e.Info)
		if err != nil {
			return err
		}
		copyMarkHardlink(&ce, e.Info, seen)
		s.entries = append(s.entries, ce)
	}
	return nil
}

func (p *copyPlan) excluded(rel string) (bool, error) {
	if len(p.req.Exclude) == 0 {
		return false, nil
	}
	ok, err := patternmatcher.MatchesOrParentMatches(rel, p.req.Exclude)
	if err != nil {
		return false, fmt.Errorf("match --exclude against %s: %w", rel, err)
	}
	return ok, nil
}

// copyMarkHardlink turns the second and later names of an inode into
// hardlinks to the first one.
func copyMarkHardlink(ce *copyEntry, fi fs.FileInfo, seen map[[2]uint64]string) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || ce.kind != copyFile || st.Nlink < 2 {
		return
	}
	id := [2]uint64{st.Dev, st.Ino}
	if first, ok := seen[id]; ok {
		ce.kind, ce.link = copyHardlink, first
		return
	}
	seen[id] = ce.rel
}

// copyEntryOf describes the resolved entry rel of tree, to be written at sub.
func copyEntryOf(tree *buildcontext.Context, sub, rel string, fi fs.FileInfo) (copyEntry, error) {
	host := tree.HostPath(rel)
	ce := copyEntry{rel: sub, mode: fi.Mode(), mtime: fi.ModTime(), host: host, info: fi}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ce.uid, ce.gid = int(st.Uid), int(st.Gid)
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		ce.kind = copyFile
	case m.IsDir():
		ce.kind = copyDir
	case m&fs.ModeSymlink != 0:
		ce.kind = copySymlink
		target, err := os.Readlink(host)
		if err != nil {
			return ce, fmt.Errorf("readlink %q: %w", "/"+rel, err)
		}
		ce.link = target
	case m&fs.ModeNamedPipe != 0:
		ce.kind = copyFifo
	case m&fs.ModeDevice != 0:
		ce.kind = copyDevice
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ce.rdev = st.Rdev
		}
	case m&fs.ModeSocket != 0:
		// As BuildKit: a socket in the source becomes an empty regular
		// file with the socket's permissions (no host path to read).
		ce.kind, ce.host, ce.mode, ce.digest = copyFile, "", m.Perm(), emptySHA256
		return ce, nil
	default:
		return ce, fmt.Errorf("copy %q: unsupported file type %s", "/"+rel, m.Type())
	}
	if ce.kind == copyFile {
		return ce, nil // hashAll reads its xattrs with its content, in parallel
	}
	xattrs, err := copyReadXattrs(host)
	if err != nil {
		return ce, err
	}
	ce.xattrs = xattrs
	return ce, nil
}

// emptySHA256 is the content digest of an empty file.
const emptySHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func copyHeredoc(i int, hd instructions.SourceContent) *copySource {
	sum := sha256.Sum256([]byte(hd.Data))
	name := path.Base(buildcontext.Clean(hd.Path))
	return &copySource{index: i, written: "<<" + hd.Path, name: name, data: []byte(hd.Data),
		entries: []copyEntry{{kind: copyFile, mode: 0o644, mtime: time.Now(), digest: "sha256:" + hex.EncodeToString(sum[:])}}}
}

// hashAll computes the content digest and reads the xattrs of every
// selected regular file, on 2×GOMAXPROCS workers (a worker keeps the stack
// it grew, where a goroutine per file would grow one each time), and for
// ADD detects local archives by content.
func (p *copyPlan) hashAll(ctx context.Context, tree *buildcontext.Context) error {
	var jobs []func(context.Context) error
	for _, s := range p.sources {
		for j := range s.entries {
			e := &s.entries[j]
			switch {
			case e.kind == copyFile && e.digest == "":
				jobs = append(jobs, func(ctx context.Context) error { return p.hashEntry(ctx, e) })
			case e.kind == copyHardlink:
				jobs = append(jobs, func(context.Context) error { return e.readXattrs() })
			}
		}
		if p.unpacks(s) {
			jobs = append(jobs, func(context.Context) error {
				ok, err := addIsArchive(s.entries[0].host)
				s.archive = ok
				return err
			})
		}
	}
	return copyParallel(ctx, jobs)
}

// unpacks reports whether ADD extracts s if it is an archive: a local file
// unless --unpack=false, a download only with --unpack=true (BuildKit).
func (p *copyPlan) unpacks(s *copySource) bool {
	if !p.req.Add || s.data != nil || s.entries[0].kind != copyFile || s.entries[0].host == "" {
		return false
	}
	if p.req.Unpack != nil {
		return *p.req.Unpack
	}
	return s.url == nil
}

// copyParallel runs jobs on 2×GOMAXPROCS workers and returns the first
// error; the jobs not started by then are skipped.
func copyParallel(ctx context.Context, jobs []func(context.Context) error) error {
	g, gctx := errgroup.WithContext(ctx)
	var next atomic.Int64
	for range min(len(jobs), runtime.GOMAXPROCS(0)*2) {
		g.Go(func() error {
			for i := next.Add(1) - 1; i < int64(len(jobs)); i = next.Add(1) - 1 {
				if err := gctx.Err(); err != nil {
					return err
				}
				if err := jobs[i](gctx); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

func (e *copyEntry) readXattrs() error {
	x, err := copyReadXattrs(e.host)
	e.xattrs = x
	return err
}

// hashEntry sets the digest and xattrs of a regular file, through the
// cache's memo when there is one.
func (p *copyPlan) hashEntry(ctx context.Context, e *copyEntry) error {
	if p.req.Hash != nil {
		fi := e.info
		if fi == nil {
			var err error
			if fi, err = os.Lstat(e.host); err != nil {
				return fmt.Errorf("stat %s: %w", e.host, err)
			}
		}
		sum, err := p.req.Hash(ctx, e.host, fi)
		if errors.Is(err, cache.ErrFileReplaced) {
			return sourceChanged(err) // the build runs again, and lists it anew
		}
		if err != nil {
			return err
		}
		e.digest = sum.Digest
		if sum.Capability != nil {
			e.xattrs = map[string][]byte{"security.capability": sum.Capability}
		}
		return nil
	}
	if err := e.readXattrs(); err != nil {
		return err
	}
	d, err := copyDigest(e.host)
	if err != nil {
		return fmt.Errorf("hash %s: %w", e.host, err)
	}
	e.digest = d
	return nil
}

// copyReadXattrs returns the security.capability xattr of host, and the
// record of a rootless build's stand-in (snapshot.OverrideXattr: a device
// or an owner its user namespace lacks), if any.
func copyReadXattrs(host string) (map[string][]byte, error) {
	var out map[string][]byte
	for _, name := range []string{"security.capability", snapshot.OverrideXattr} {
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(host, name, buf)
		if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read xattrs of %s: %w", host, err)
		}
		if out == nil {
			out = map[string][]byte{}
		}
		out[name] = buf[:n]
	}
	return out, nil
}
