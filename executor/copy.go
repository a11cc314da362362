package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/internal/user"
	"github.com/builder-dev/builder/snapshot"
	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/patternmatcher"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// copyRequest is one expanded COPY or ADD instruction.
type copyRequest struct {
	Add        bool
	Line       int
	Sources    []string                     // expanded, as written (globs, URLs for ADD)
	Heredocs   []instructions.SourceContent // inline files
	Dest       string                       // expanded destination as written
	Workdir    string                       // image WorkingDir for a relative Dest ("" = "/")
	Chown      string
	Chmod      string
	Checksum   string // ADD --checksum
	KeepGitDir bool
	Link       bool
	Parents    bool
	Exclude    []string
	Context    *buildcontext.Context // the build context, or nil with SrcRoot
	SrcRoot    string                // root of a --from stage/image when Context is nil
	Hash       func(ctx context.Context, path string, fi os.FileInfo) (string, error)
	HTTPClient *http.Client
	TempDir    string
	// Warn receives non-fatal problems, such as device nodes of an ADD
	// archive that cannot be created in a user namespace; nil drops them.
	Warn func(msg string)
}

// copyKind is what a selected entry is.
type copyKind int

const (
	copyFile copyKind = iota
	copyDir
	copySymlink
	copyHardlink
	copyFifo
	copyDevice
)

var copyKindNames = [...]string{"file", "dir", "symlink", "hardlink", "fifo", "device"}

// copyEntry is one file to write: rel is its path below the source's
// destination ("" for the top-level entry itself).
type copyEntry struct {
	rel    string
	kind   copyKind
	mode   fs.FileMode
	rdev   uint64
	mtime  time.Time
	digest string
	link   string // symlink target, or the rel of the first hardlink
	host   string // host path to read content from
	xattrs map[string][]byte
}

// copySource is one selected top-level source with everything below it.
type copySource struct {
	index   int
	written string // the source as written (or the URL / heredoc name)
	name    string // base name used when copying into a directory
	entries []copyEntry
	archive bool   // ADD of a local archive: extract into dest
	data    []byte // heredoc content
	url     *addDownload
	// COPY --parents: the source is written at dest/name, where name is
	// its path below pivot, and parents are the directories between
	// pivot and the source (rel relative to dest), outermost first.
	pivot   string
	parents []copyEntry
}

// copyPlan is a COPY/ADD whose sources are selected and hashed; Apply
// writes it into a rootfs. It is not safe for concurrent use.
type copyPlan struct {
	req     copyRequest
	chmod   *copyChmod
	dest    string // absolute, slash-separated, inside the rootfs
	destDir bool   // dest was written as a directory ("/" suffix, ".")
	sources []*copySource
}

// copyPrepare validates the flags, selects every source file, and hashes
// them. All source errors happen here, before any write. Globs follow
// BuildKit's AllowEmptyWildcard: a wildcard that matches nothing selects
// nothing and is not an error, alone or beside other sources (buildkit
// testEmptyWildcard); a missing literal path is `"/path": not found`.
func copyPrepare(ctx context.Context, req copyRequest) (_ *copyPlan, err error) {
	p := &copyPlan{req: req}
	if err := p.validate(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	tree, err := p.tree()
	if err != nil {
		return nil, err
	}
	for i, src := range req.Sources {
		if err := p.addSource(ctx, tree, i, src); err != nil {
			return nil, err
		}
	}
	for i, hd := range req.Heredocs {
		p.sources = append(p.sources, copyHeredoc(len(req.Sources)+i, hd))
	}
	if err := p.hashAll(ctx, tree); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *copyPlan) validate() error {
	req := p.req
	op := "COPY"
	if req.Add {
		op = "ADD"
	}
	if len(req.Sources) == 0 && len(req.Heredocs) == 0 {
		return fmt.Errorf("%s requires at least one source", op)
	}
	for _, s := range req.Sources {
		if addIsURL(s) && !req.Add {
			return errors.New("source can't be a URL for COPY")
		}
	}
	if req.Checksum != "" {
		if !req.Add {
			return errors.New("checksum can't be specified for COPY")
		}
		if len(req.Sources) != 1 || !addIsURL(req.Sources[0]) {
			return errors.New("checksum requires a single HTTP(S) source")
		}
	}
	if req.Chmod != "" {
		m, err := copyParseChmod(req.Chmod)
		if err != nil {
			return err
		}
		p.chmod = m
	}
	if _, err := patternmatcher.New(req.Exclude); err != nil {
		return fmt.Errorf("invalid --exclude pattern: %w", err)
	}
	p.dest, p.destDir = copyDest(req.Workdir, req.Dest)
	return nil
}

// copyDest resolves dest against the workdir.
func copyDest(workdir, dest string) (string, bool) {
	isDir := strings.HasSuffix(dest, "/") || dest == "." || strings.HasSuffix(dest, "/.")
	if !path.IsAbs(dest) {
		if workdir == "" {
			workdir = "/"
		}
		dest = path.Join(workdir, dest)
	}
	return path.Clean("/" + dest), isDir
}

// tree returns the source tree of local sources.
func (p *copyPlan) tree() (*buildcontext.Context, error) {
	if p.req.Context != nil {
		return p.req.Context, nil
	}
	if p.req.SrcRoot == "" {
		return nil, nil
	}
	return buildcontext.Open(p.req.SrcRoot, nil)
}

func (p *copyPlan) addSource(ctx context.Context, tree *buildcontext.Context, i int, src string) error {
	if addIsURL(src) {
		dl, err := addFetch(ctx, p.req.HTTPClient, p.req.TempDir, src, p.req.Checksum)
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

// copyGlob expands src when it holds wildcards.
func copyGlob(ctx context.Context, tree *buildcontext.Context, src string) ([]string, error) {
	if !buildcontext.HasMeta(src) {
		return []string{src}, nil
	}
	return tree.Glob(ctx, src)
}

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

// appendSource lists what the resolved entry rel selects into s and adds
// s to the plan, unless --exclude drops it.
func (p *copyPlan) appendSource(ctx context.Context, tree *buildcontext.Context, s *copySource, rel string) error {
	if ex, err := p.excluded(s.name); err != nil || ex {
		return err
	}
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
	p.sources = append(p.sources, s)
	return nil
}

func (p *copyPlan) selectDir(ctx context.Context, tree *buildcontext.Context, s *copySource, rel string) error {
	entries, err := tree.Walk(ctx, rel)
	if err != nil {
		return err
	}
	seen := map[[2]uint64]string{}
	for _, e := range entries {
		sub := e.Rel
		if rel != "." {
			sub = strings.TrimPrefix(e.Rel, rel+"/")
		}
		if ex, err := p.excluded(sub); err != nil || ex {
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
	ce := copyEntry{rel: sub, mode: fi.Mode(), mtime: fi.ModTime(), host: host}
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
	default:
		return ce, fmt.Errorf("copy %q: unsupported file type %s", "/"+rel, m.Type())
	}
	xattrs, err := copyReadXattrs(host)
	if err != nil {
		return ce, err
	}
	ce.xattrs = xattrs
	return ce, nil
}

func copyHeredoc(i int, hd instructions.SourceContent) *copySource {
	sum := sha256.Sum256([]byte(hd.Data))
	name := path.Base(buildcontext.Clean(hd.Path))
	return &copySource{index: i, written: "<<" + hd.Path, name: name, data: []byte(hd.Data),
		entries: []copyEntry{{kind: copyFile, mode: 0o644, mtime: time.Now(), digest: "sha256:" + hex.EncodeToString(sum[:])}}}
}

// hashAll computes the content digest of every selected regular file in
// parallel, and for ADD detects local archives by content.
func (p *copyPlan) hashAll(ctx context.Context, tree *buildcontext.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0) * 2)
	for _, s := range p.sources {
		for j := range s.entries {
			e := &s.entries[j]
			if e.kind != copyFile || e.digest != "" {
				continue
			}
			g.Go(func() error { return p.hashEntry(gctx, e) })
		}
		if p.req.Add && s.url == nil && s.data == nil && s.entries[0].kind == copyFile {
			g.Go(func() error {
				ok, err := addIsArchive(s.entries[0].host)
				s.archive = ok
				return err
			})
		}
	}
	return g.Wait()
}

func (p *copyPlan) hashEntry(ctx context.Context, e *copyEntry) error {
	if p.req.Hash != nil {
		fi, err := os.Lstat(e.host)
		if err != nil {
			return fmt.Errorf("stat %s: %w", e.host, err)
		}
		d, err := p.req.Hash(ctx, e.host, fi)
		if err != nil {
			return err
		}
		e.digest = d
		return nil
	}
	f, err := os.OpenFile(e.host, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("hash %s: %w", e.host, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("hash %s: %w", e.host, err)
	}
	e.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return nil
}

// Inputs lists every selected file for the cache key. Paths are prefixed by
// the source's index and its path as written so that sources never
// collide; the parent directories that --parents recreates are listed at
// their own paths, which are ancestors of the source's.
func (p *copyPlan) Inputs() []cache.FileInput {
	var out []cache.FileInput
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
	add("flag.checksum", p.req.Checksum)
	add("flag.link", strconv.FormatBool(p.req.Link))
	add("flag.keep-git-dir", strconv.FormatBool(p.req.KeepGitDir))
	if p.req.Parents {
		add("flag.parents", "true")
	}
	for _, x := range p.req.Exclude {
		add("flag.exclude", x)
	}
	for _, s := range p.sources {
		p.sourceFields(s, add)
	}
	return fields
}

func (p *copyPlan) sourceFields(s *copySource, add func(name, v string)) {
	key := "source." + strconv.Itoa(s.index)
	switch {
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
	}
}

// Close removes temporary downloads; it is safe to call more than once.
func (p *copyPlan) Close() error {
	var errs []error
	for _, s := range p.sources {
		if s.url != nil && s.url.file != "" {
			if err := os.Remove(s.url.file); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			s.url.file = ""
		}
	}
	return errors.Join(errs...)
}

// copyModeBits returns permission bits plus setuid/setgid/sticky in Unix
// encoding.
func copyModeBits(m fs.FileMode) uint32 {
	bits := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		bits |= syscall.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		bits |= syscall.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		bits |= syscall.S_ISVTX
	}
	return bits
}

// copyUnixMode converts Unix permission and special bits to an fs.FileMode.
func copyUnixMode(bits uint32) fs.FileMode {
	m := fs.FileMode(bits & 0o777)
	if bits&syscall.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if bits&syscall.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if bits&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// copyOwner is the uid/gid of written files (0:0 without --chown).
type copyOwner struct{ uid, gid int }

// Apply writes the plan into rootfs, the step's mounted root. The
// destination and every parent are resolved inside rootfs at write time
// (securejoin), so absolute symlinks in the image resolve inside it;
// missing parents are created 0755, owned by --chown when given.
func (p *copyPlan) Apply(ctx context.Context, rootfs string) error {
	own, err := p.owner(rootfs)
	if err != nil {
		return err
	}
	destIsDir, err := copyIsDir(rootfs, p.dest)
	if err != nil {
		return err
	}
	intoDir := p.destDir || destIsDir || p.req.Parents
	if len(p.sources) > 1 && !intoDir {
		return errors.New("When using COPY with more than one source file, the destination must be a directory and end with a /")
	}
	var created []copyEntry // --parents directories, rel inside rootfs
	for _, s := range p.sources {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.pivot != "" {
			dirs, err := p.applyParents(ctx, rootfs, s, own)
			if err != nil {
				return err
			}
			created = append(created, dirs...)
			continue
		}
		if err := p.applySource(ctx, rootfs, s, intoDir, own); err != nil {
			return err
		}
	}
	return copySetDirTimes(rootfs, created)
}

func (p *copyPlan) owner(rootfs string) (copyOwner, error) {
	if p.req.Chown == "" {
		return copyOwner{}, nil
	}
	uid, gid, err := user.ResolveChown(rootfs, p.req.Chown)
	if err != nil {
		return copyOwner{}, fmt.Errorf("resolve --chown=%s: %w", p.req.Chown, err)
	}
	return copyOwner{uid: uid, gid: gid}, nil
}

func (p *copyPlan) applySource(ctx context.Context, rootfs string, s *copySource, intoDir bool, own copyOwner) error {
	top := s.entries[0]
	switch {
	case s.archive:
		return p.addExtract(ctx, rootfs, s, own)
	case top.kind == copyDir:
		return p.applyTree(ctx, rootfs, p.dest, s, own)
	}
	dst := p.dest
	if intoDir {
		dst = path.Join(p.dest, s.name)
	}
	if err := copyMkdirAll(rootfs, path.Dir(dst), own); err != nil {
		return err
	}
	return p.writeEntry(rootfs, dst, s, top, own, nil)
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

// copySetDirTimes sets the mtime of directories, innermost last created
// first, once their content is written.
func copySetDirTimes(rootfs string, dirs []copyEntry) error {
	for i := len(dirs) - 1; i >= 0; i-- {
		host, err := copyHostPath(rootfs, dirs[i].rel)
		if err != nil {
			return err
		}
		if err := copyTimes(host, dirs[i].mtime); err != nil {
			return err
		}
	}
	return nil
}

// applyTree copies a directory's contents into dst. A dst that exists
// keeps its metadata; one that is created takes the source directory's.
func (p *copyPlan) applyTree(ctx context.Context, rootfs, dst string, s *copySource, own copyOwner) error {
	if err := copyMkdirAll(rootfs, path.Dir(dst), own); err != nil {
		return err
	}
	existed, err := copyIsDir(rootfs, dst)
	if err != nil {
		return err
	}
	var dirs []copyEntry
	written := map[string]string{}
	for _, e := range s.entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.rel == "" && existed {
			continue
		}
		if err := p.writeEntry(rootfs, path.Join(dst, e.rel), s, e, own, written); err != nil {
			return err
		}
		if e.kind == copyDir {
			e.rel = path.Join(dst, e.rel)
			dirs = append(dirs, e)
		}
	}
	return copySetDirTimes(rootfs, dirs) // children change a dir's mtime
}

// writeEntry writes one entry at dst (absolute inside rootfs). Its parent
// is resolved inside rootfs; an existing non-directory at dst is replaced,
// never written through.
func (p *copyPlan) writeEntry(rootfs, dst string, s *copySource, e copyEntry, own copyOwner, written map[string]string) error {
	host, err := copyHostPath(rootfs, dst)
	if err != nil {
		return err
	}
	if err := copyClear(host, dst, e.kind == copyDir); err != nil {
		return err
	}
	mode := e.mode
	if p.chmod != nil && (e.kind == copyFile || e.kind == copyDir) {
		mode = copyUnixMode(p.chmod.apply(copyModeBits(e.mode), e.kind == copyDir))
	}
	switch e.kind {
	case copyFile:
		err = p.writeFile(host, s, e)
	case copyHardlink:
		err = os.Link(written[e.link], host)
	case copyDir:
		err = copyMkdir(host)
	case copySymlink:
		err = os.Symlink(e.link, host)
	case copyFifo, copyDevice:
		err = copyMknod(host, e)
	}
	if err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if written != nil {
		written[e.rel] = host
	}
	if e.kind == copyHardlink {
		return nil
	}
	return copyFinish(host, dst, e, mode, own)
}

func (p *copyPlan) writeFile(host string, s *copySource, e copyEntry) error {
	var r io.Reader
	if s.data != nil {
		r = strings.NewReader(string(s.data))
	} else {
		f, err := os.OpenFile(e.host, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	out, err := os.OpenFile(host, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copyFinish sets ownership, mode, xattrs and mtime, in an order that keeps
// setuid bits (chown clears them) and the mtime (xattrs don't touch it).
func copyFinish(host, dst string, e copyEntry, mode fs.FileMode, own copyOwner) error {
	if err := os.Lchown(host, own.uid, own.gid); err != nil {
		return fmt.Errorf("chown %s: %w", dst, err)
	}
	if e.kind != copySymlink {
		if err := unix.Chmod(host, copyModeBits(mode)); err != nil {
			return fmt.Errorf("chmod %s: %w", dst, err)
		}
	}
	for k, v := range e.xattrs {
		if err := unix.Lsetxattr(host, k, v, 0); err != nil {
			return fmt.Errorf("set xattr %s on %s: %w", k, dst, err)
		}
	}
	return copyTimes(host, e.mtime)
}

func copyTimes(host string, mtime time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, host, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", host, err)
	}
	return nil
}

func copyMkdir(host string) error {
	fi, err := os.Lstat(host)
	if err == nil && fi.IsDir() {
		return nil
	}
	return os.Mkdir(host, 0o700)
}

func copyMknod(host string, e copyEntry) error {
	typ := uint32(unix.S_IFIFO)
	if e.kind == copyDevice {
		typ = unix.S_IFBLK
		if e.mode&fs.ModeCharDevice != 0 {
			typ = unix.S_IFCHR
		}
	}
	return unix.Mknod(host, typ|0o600, int(e.rdev))
}

// copyClear removes an existing non-directory at host so that it is
// replaced rather than written through; a directory stays when a directory
// is wanted and is an error otherwise.
func copyClear(host, dst string, wantDir bool) error {
	fi, err := os.Lstat(host)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", dst, err)
	}
	switch {
	case fi.IsDir() && wantDir:
		return nil
	case fi.IsDir():
		return fmt.Errorf("copy to %s: cannot replace a directory with a file", dst)
	}
	if err := os.Remove(host); err != nil {
		return fmt.Errorf("replace %s: %w", dst, err)
	}
	return nil
}

// copyHostPath resolves the parent of dst inside rootfs (following
// symlinks inside it) and appends the final name unresolved.
func copyHostPath(rootfs, dst string) (string, error) {
	dst = path.Clean("/" + dst)
	if dst == "/" {
		return rootfs, nil
	}
	parent, err := securejoin.SecureJoin(rootfs, path.Dir(dst))
	if err != nil {
		return "", fmt.Errorf("resolve %s in rootfs: %w", dst, err)
	}
	return filepath.Join(parent, path.Base(dst)), nil
}

// copyIsDir reports whether dst, symlinks followed inside rootfs, is a
// directory.
func copyIsDir(rootfs, dst string) (bool, error) {
	host, err := securejoin.SecureJoin(rootfs, dst)
	if err != nil {
		return false, fmt.Errorf("resolve %s in rootfs: %w", dst, err)
	}
	fi, err := os.Stat(host)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", dst, err)
	}
	return fi.IsDir(), nil
}

// copyMkdirAll creates dir and its missing parents inside rootfs, 0755,
// owned by own (root unless --chown), like BuildKit's CreateDestPath.
func copyMkdirAll(rootfs, dir string, own copyOwner) error {
	cur := "/"
	for _, comp := range strings.Split(strings.Trim(path.Clean("/"+dir), "/"), "/") {
		if comp == "" {
			continue
		}
		cur = path.Join(cur, comp)
		host, err := securejoin.SecureJoin(rootfs, cur)
		if err != nil {
			return fmt.Errorf("resolve %s in rootfs: %w", cur, err)
		}
		fi, err := os.Stat(host)
		if err == nil && fi.IsDir() {
			continue
		}
		if err == nil {
			return fmt.Errorf("mkdir %s: not a directory", cur)
		}
		if err := os.Mkdir(host, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", cur, err)
		}
		if err := os.Lchown(host, own.uid, own.gid); err != nil {
			return fmt.Errorf("chown %s: %w", cur, err)
		}
	}
	return nil
}

// copyReadXattrs returns the security.capability xattr of host, if any.
func copyReadXattrs(host string) (map[string][]byte, error) {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(host, "security.capability", buf)
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read xattrs of %s: %w", host, err)
	}
	return map[string][]byte{"security.capability": buf[:n]}, nil
}

// addIsArchive reports whether the file at host is a tar archive,
// compressed or not, by content as BuildKit does: its first tar header.
func addIsArchive(host string) (bool, error) {
	f, err := os.OpenFile(host, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", host, err)
	}
	defer f.Close()
	ok, _, err := snapshot.IsArchive(f)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", host, err)
	}
	return ok, nil
}

// addExtract unpacks the local archive of s into the destination, the way
// BuildKit's ADD does through moby's chrootarchive: the destination is the
// root of the extraction, so entry names, hardlinks and symlinks in it
// cannot reach outside it, and names that climb out are an error. Entries
// keep the archive's ownership unless --chown is set, ".wh." names are
// ordinary files, and device nodes that cannot be created (EPERM in a user
// namespace) are skipped with a warning.
func (p *copyPlan) addExtract(ctx context.Context, rootfs string, s *copySource, own copyOwner) error {
	if err := copyMkdirAll(rootfs, p.dest, own); err != nil {
		return err
	}
	root, err := securejoin.SecureJoin(rootfs, p.dest)
	if err != nil {
		return fmt.Errorf("resolve %s in rootfs: %w", p.dest, err)
	}
	f, err := os.OpenFile(s.entries[0].host, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open archive %s: %w", s.written, err)
	}
	defer f.Close()
	rc, _, err := snapshot.Decompress(f)
	if err != nil {
		return fmt.Errorf("extract %s: %w", s.written, err)
	}
	defer rc.Close()
	opts := []snapshot.ApplyOption{snapshot.WithNoWhiteouts()}
	if p.req.Warn != nil {
		opts = append(opts, snapshot.WithWarn(p.req.Warn))
	}
	if p.req.Chown != "" {
		opts = append(opts, snapshot.WithChown(own.uid, own.gid))
	}
	if _, err := snapshot.Apply(ctx, root, rc, opts...); err != nil {
		return fmt.Errorf("extract %s: %w", s.written, err)
	}
	return nil
}

// copyChmodUmask is the file creation mask that symbolic --chmod clauses
// without a "who" ("+x", "=rw") are relative to. BuildKit parses them
// with its daemon's umask, 022 in practice; a constant keeps the result
// independent of the builder's own umask.
const copyChmodUmask = 0o022

// copyChmodWho returns the mode bits a "who" letter names (0 for none).
func copyChmodWho(l byte) uint32 {
	switch l {
	case 'u':
		return 0o4700
	case 'g':
		return 0o2070
	case 'o':
		return 0o0007
	case 'a':
		return 0o6777
	}
	return 0
}

// copyChmodPerm returns the bits a permission letter (r, w, x, s, t) sets
// across all classes.
func copyChmodPerm(l byte) uint32 {
	switch l {
	case 'r':
		return 0o444
	case 'w':
		return 0o222
	case 'x':
		return 0o111
	case 's':
		return 0o6000
	case 't':
		return 0o1000
	}
	return 0
}

// copyChmod is a parsed --chmod: an octal mode, or chmod(1) symbolic
// clauses ("u+x,g-w", "a=r", "go=u-w") applied to each entry's own mode,
// with BSD setmode semantics as BuildKit's parser has them.
type copyChmod struct {
	octal   uint32
	actions []copyChmodAction // nil for an octal mode
}

// copyChmodAction is one operator of a symbolic clause: "ug+rx" is who
// u and g, op '+', perm "rx".
type copyChmodAction struct {
	who  uint32 // bits the clause's who letters name; 0 = all, umask-masked
	op   byte   // '+', '-' or '='
	perm string // letters from "rwxXst", or one of "ugo" to copy a class
}

// copyParseChmod parses --chmod: octal as before (with BuildKit's message
// when it looks numeric but is not a valid mode), or a symbolic mode.
func copyParseChmod(s string) (*copyChmod, error) {
	if s != "" && s[0] >= '0' && s[0] <= '9' {
		n, err := strconv.ParseUint(s, 8, 32)
		if err != nil || n > 0o7777 {
			return nil, fmt.Errorf("invalid chmod parameter: '%v'. it should be octal string and between 0 and 07777", s)
		}
		return &copyChmod{octal: uint32(n)}, nil
	}
	c := &copyChmod{}
	for _, clause := range strings.Split(s, ",") {
		acts, err := copyParseClause(clause)
		if err != nil {
			return nil, fmt.Errorf("invalid chmod parameter: '%v': %w (want octal 0-7777 or symbolic like u+x,g-w)", s, err)
		}
		c.actions = append(c.actions, acts...)
	}
	return c, nil
}

// copyParseClause parses one comma-separated clause: [ugoa]*, then one or
// more operators each with its permission letters.
func copyParseClause(clause string) ([]copyChmodAction, error) {
	i := 0
	var who uint32
	for ; i < len(clause) && copyChmodWho(clause[i]) != 0; i++ {
		who |= copyChmodWho(clause[i])
	}
	var acts []copyChmodAction
	for i < len(clause) {
		op := clause[i]
		if op != '+' && op != '-' && op != '=' {
			return nil, fmt.Errorf("unexpected %q in %q", op, clause)
		}
		j := i + 1
		for j < len(clause) && strings.IndexByte("rwxXstugo", clause[j]) >= 0 {
			j++
		}
		perm := clause[i+1 : j]
		if strings.ContainsAny(perm, "ugo") && len(perm) != 1 {
			return nil, fmt.Errorf("%q: a class to copy (u, g, o) stands alone", clause)
		}
		acts = append(acts, copyChmodAction{who: who, op: op, perm: perm})
		i = j
	}
	if len(acts) == 0 {
		return nil, fmt.Errorf("clause %q has no operator", clause)
	}
	return acts, nil
}

// apply returns the new permission and special bits of an entry whose
// bits are now mode.
func (c *copyChmod) apply(mode uint32, isDir bool) uint32 {
	if c.actions == nil {
		return c.octal
	}
	orig := mode
	for _, a := range c.actions {
		mode = a.apply(mode, orig, isDir)
	}
	return mode
}

func (a copyChmodAction) apply(mode, orig uint32, isDir bool) uint32 {
	who := a.who
	if who == 0 {
		who = 0o6777 &^ copyChmodUmask
	}
	perm := a.bits(mode, orig, isDir)
	set := perm & who
	if perm&0o1000 != 0 && (a.who == 0 || a.who&0o6770 != 0) { // sticky: not for "o" alone
		set |= 0o1000
	}
	switch a.op {
	case '+':
		return mode | set
	case '-':
		return mode &^ set
	}
	clear := a.who
	if clear == 0 {
		clear = 0o6777
	}
	return mode&^clear | set
}

// bits expands the permission letters against the entry: "X" only with
// "+" and only for directories or entries that had an execute bit, a
// class letter copies that class's current bits.
func (a copyChmodAction) bits(mode, orig uint32, isDir bool) uint32 {
	var perm uint32
	for _, l := range []byte(a.perm) {
		switch class := strings.IndexByte("ogu", l); {
		case class >= 0: // copy that class's bits
			perm |= (mode >> (3 * class) & 7) * 0o111
		case l == 'X':
			if a.op == '+' && (isDir || orig&0o111 != 0) {
				perm |= 0o111
			}
		default:
			perm |= copyChmodPerm(l)
		}
	}
	return perm
}
