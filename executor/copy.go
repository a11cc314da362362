package executor

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
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
	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
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
}

// copyPlan is a COPY/ADD whose sources are selected and hashed; Apply
// writes it into a rootfs. It is not safe for concurrent use.
type copyPlan struct {
	req     copyRequest
	chmod   *fs.FileMode
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
	if req.Parents {
		return fmt.Errorf("%s --parents is not supported", op)
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
		p.chmod = &m
	}
	if _, err := patternmatcher.New(req.Exclude); err != nil {
		return fmt.Errorf("invalid --exclude pattern: %w", err)
	}
	p.dest, p.destDir = copyDest(req.Workdir, req.Dest)
	return nil
}

// copyParseChmod parses an octal --chmod (BuildKit's message on error).
func copyParseChmod(s string) (fs.FileMode, error) {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 {
		return 0, fmt.Errorf("invalid chmod parameter: '%v'. it should be octal string and between 0 and 07777", s)
	}
	return copyUnixMode(uint32(n)), nil
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
	matches := []string{src}
	if buildcontext.HasMeta(src) {
		var err error
		if matches, err = tree.Glob(ctx, src); err != nil {
			return err
		}
	}
	for _, m := range matches {
		s, err := p.selectSource(ctx, tree, i, m)
		if err != nil {
			return err
		}
		if s != nil {
			p.sources = append(p.sources, s)
		}
	}
	return nil
}

// selectSource resolves one source path (following a top-level symlink, as
// Docker does) and lists what it selects.
func (p *copyPlan) selectSource(ctx context.Context, tree *buildcontext.Context, i int, written string) (*copySource, error) {
	rel, err := tree.Resolve(written)
	if err != nil {
		return nil, err
	}
	name := path.Base(buildcontext.Clean(written))
	if ex, err := p.excluded(name); err != nil || ex {
		return nil, err
	}
	fi, err := tree.Lstat(rel)
	if err != nil {
		return nil, fmt.Errorf("stat %q: %w", "/"+buildcontext.Clean(written), err)
	}
	top, err := copyEntryOf(tree, "", rel, fi)
	if err != nil {
		return nil, err
	}
	s := &copySource{index: i, written: written, name: name, entries: []copyEntry{top}}
	if top.kind == copyDir {
		return s, p.selectDir(ctx, tree, s, rel)
	}
	return s, nil
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
				ok, err := addIsArchive(gctx, s.entries[0].host)
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
// the source's index and its path as written so that sources never collide.
func (p *copyPlan) Inputs() []cache.FileInput {
	var out []cache.FileInput
	for _, s := range p.sources {
		prefix := fmt.Sprintf("%d/%s", s.index, buildcontext.Clean(s.written))
		if s.url != nil || s.data != nil {
			prefix = fmt.Sprintf("%d/%s", s.index, s.name)
		}
		for _, e := range s.entries {
			fi := cache.FileInput{Path: path.Join(prefix, e.rel), Type: copyKindNames[e.kind],
				Mode: copyModeBits(e.mode), Digest: e.digest, Link: e.link}
			if e.kind == copyHardlink {
				fi.Link = path.Join(prefix, e.link)
			}
			out = append(out, fi)
		}
	}
	return out
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
	intoDir := p.destDir || destIsDir
	if len(p.sources) > 1 && !intoDir {
		return errors.New("When using COPY with more than one source file, the destination must be a directory and end with a /")
	}
	for _, s := range p.sources {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.applySource(ctx, rootfs, s, intoDir, own); err != nil {
			return err
		}
	}
	return nil
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
		return addExtract(ctx, rootfs, p.dest, top.host, p.req.Chown != "", own)
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
			dirs = append(dirs, e)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- { // children change a dir's mtime
		host, err := copyHostPath(rootfs, path.Join(dst, dirs[i].rel))
		if err != nil {
			return err
		}
		if err := copyTimes(host, dirs[i].mtime); err != nil {
			return err
		}
	}
	return nil
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
	if p.chmod != nil && (e.kind == copyFile || e.kind == copyDir || e.kind == copyHardlink) {
		mode = *p.chmod
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

// addDecompress detects the compression of r by its magic bytes (gzip,
// bzip2, xz, zstd; anything else is returned as is). snapshot.Decompress
// did not exist yet when this was written; it should replace this.
func addDecompress(ctx context.Context, r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(6)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return gzip.NewReader(br)
	case bytes.HasPrefix(magic, []byte("BZh")):
		return io.NopCloser(bzip2.NewReader(br)), nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return addXZ(ctx, br)
	}
	return io.NopCloser(br), nil
}

// addXZ decompresses with the system xz, as moby does.
func addXZ(ctx context.Context, r io.Reader) (io.ReadCloser, error) {
	cmd := exec.CommandContext(ctx, "xz", "-d", "-c", "-q")
	cmd.Stdin = r
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start xz: %w", err)
	}
	return &addCmdReader{ReadCloser: out, cmd: cmd, stderr: &stderr}, nil
}

type addCmdReader struct {
	io.ReadCloser
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

func (c *addCmdReader) Close() error {
	c.ReadCloser.Close()
	if err := c.cmd.Wait(); err != nil {
		return fmt.Errorf("xz: %w: %s", err, strings.TrimSpace(c.stderr.String()))
	}
	return nil
}

// addIsArchive reports whether the file is a (possibly compressed) tar,
// by content as BuildKit does: a valid first tar header.
func addIsArchive(ctx context.Context, host string) (bool, error) {
	f, err := os.OpenFile(host, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", host, err)
	}
	defer f.Close()
	rc, err := addDecompress(ctx, f)
	if err != nil {
		return false, nil // compressed-looking but corrupt: copy verbatim
	}
	defer rc.Close()
	_, err = tar.NewReader(rc).Next()
	return err == nil, nil
}

// addExtract unpacks the archive at host into dest inside rootfs. Entry
// names are clamped to dest, every path is resolved inside rootfs at write
// time, and whiteout names are ordinary files (Docker's ADD). Ownership is
// the archive's unless --chown is set.
func addExtract(ctx context.Context, rootfs, dest, host string, chown bool, own copyOwner) error {
	f, err := os.OpenFile(host, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open archive: %w", err)
	}
	defer f.Close()
	rc, err := addDecompress(ctx, f)
	if err != nil {
		return fmt.Errorf("decompress archive: %w", err)
	}
	defer rc.Close()
	if err := copyMkdirAll(rootfs, dest, own); err != nil {
		return err
	}
	x := &addExtractor{rootfs: rootfs, dest: dest, chown: chown, own: own}
	tr := tar.NewReader(rc)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return x.finish()
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
}

type addExtractor struct {
	rootfs, dest string
	chown        bool
	own          copyOwner
	dirs         []copyEntry // directories whose mtime is set last
	dirPaths     []string
}

func (x *addExtractor) entry(hdr *tar.Header, r io.Reader) error {
	name := buildcontext.Clean(hdr.Name)
	if name == "." {
		return nil
	}
	dst := path.Join(x.dest, name)
	if err := copyMkdirAll(x.rootfs, path.Dir(dst), x.own); err != nil {
		return err
	}
	host, err := copyHostPath(x.rootfs, dst)
	if err != nil {
		return err
	}
	e, err := addEntryOf(hdr)
	if err != nil {
		return fmt.Errorf("archive entry %s: %w", hdr.Name, err)
	}
	if err := copyClear(host, dst, e.kind == copyDir); err != nil {
		return err
	}
	if err := x.write(host, dst, e, r); err != nil {
		return fmt.Errorf("extract %s: %w", hdr.Name, err)
	}
	if e.kind == copyHardlink {
		return nil
	}
	own := x.own
	if !x.chown {
		own = copyOwner{uid: hdr.Uid, gid: hdr.Gid}
	}
	if e.kind == copyDir {
		x.dirs, x.dirPaths = append(x.dirs, e), append(x.dirPaths, host)
		e.mtime = time.Now()
	}
	return copyFinish(host, dst, e, e.mode, own)
}

func (x *addExtractor) write(host, dst string, e copyEntry, r io.Reader) error {
	switch e.kind {
	case copyDir:
		return copyMkdir(host)
	case copySymlink:
		return os.Symlink(e.link, host)
	case copyHardlink:
		target, err := securejoin.SecureJoin(x.rootfs, path.Join(x.dest, buildcontext.Clean(e.link)))
		if err != nil {
			return err
		}
		return os.Link(target, host)
	case copyFifo, copyDevice:
		return copyMknod(host, e)
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

func (x *addExtractor) finish() error {
	for i := len(x.dirs) - 1; i >= 0; i-- {
		if err := copyTimes(x.dirPaths[i], x.dirs[i].mtime); err != nil {
			return err
		}
	}
	return nil
}

// addEntryOf converts a tar header into a copyEntry.
func addEntryOf(hdr *tar.Header) (copyEntry, error) {
	e := copyEntry{mode: copyUnixMode(uint32(hdr.Mode)), mtime: hdr.ModTime, link: hdr.Linkname}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		e.kind = copyFile
	case tar.TypeDir:
		e.kind = copyDir
	case tar.TypeSymlink:
		e.kind = copySymlink
	case tar.TypeLink:
		e.kind = copyHardlink
	case tar.TypeFifo:
		e.kind = copyFifo
	case tar.TypeChar, tar.TypeBlock:
		if hdr.Devmajor < 0 || hdr.Devminor < 0 || hdr.Devmajor > 0xfff || hdr.Devminor > 0xfffff {
			return e, fmt.Errorf("invalid device number %d:%d", hdr.Devmajor, hdr.Devminor)
		}
		e.kind = copyDevice
		e.rdev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if hdr.Typeflag == tar.TypeChar {
			e.mode |= fs.ModeCharDevice
		}
	default:
		return e, fmt.Errorf("unsupported type %q", hdr.Typeflag)
	}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && name == "security.capability" {
			e.xattrs = map[string][]byte{name: []byte(v)}
		}
	}
	return e, nil
}
