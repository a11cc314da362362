package snapshot

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

const (
	// DefaultApplyMaxBytes bounds the uncompressed bytes Apply reads and the
	// file content it writes, unless WithLimits says otherwise.
	DefaultApplyMaxBytes int64 = 100 << 30
	// DefaultApplyMaxEntries bounds the number of tar entries Apply accepts.
	DefaultApplyMaxEntries = 10_000_000

	axPAXXattr = "SCHILY.xattr."
)

var (
	// ErrApplyLimit is wrapped by Apply errors when a layer exceeds the
	// byte or entry limits (decompression bombs, entry floods).
	ErrApplyLimit = errors.New("extraction limit exceeded")
	// ErrUnsafePath is wrapped by Apply errors for entry names or hardlink
	// targets that climb out of the root with "..".
	ErrUnsafePath = errors.New("path escapes the root")
)

// axWhiteouts selects how Apply treats ".wh."-prefixed entries.
type axWhiteouts int

const (
	axWhiteoutsLayer   axWhiteouts = iota // image layer onto a full root
	axWhiteoutsOverlay                    // image layer into an overlayfs upper dir
	axWhiteoutsNone                       // plain archive: no whiteouts
)

type applyOptions struct {
	whiteouts  axWhiteouts
	chroot     bool // names that climb out stop at the root
	sameOwner  bool
	chown      *[2]int
	maxBytes   int64
	maxEntries int
	warn       func(string)
}

// ApplyOption configures Apply.
type ApplyOption func(*applyOptions)

// WithOverlayWhiteouts extracts into an overlayfs upper-format directory:
// ".wh.x" becomes a 0/0 character device x and ".wh..wh..opq" sets
// trusted.overlay.opaque=y on its directory. The LayerStore unpacks image
// layers this way.
func WithOverlayWhiteouts() ApplyOption {
	return func(o *applyOptions) { o.whiteouts = axWhiteoutsOverlay }
}

// WithNoWhiteouts extracts a plain archive (ADD of a local tar): names that
// start with ".wh." are ordinary files.
func WithNoWhiteouts() ApplyOption {
	return func(o *applyOptions) { o.whiteouts = axWhiteoutsNone }
}

// WithChrootNames resolves entry names and hardlink targets as an
// extraction chrooted into root does (BuildKit's ADD, through moby's
// chrootarchive): ".." stops at the root, so "../up" is "up". Without
// it such a name is an error (ErrUnsafePath), as for an image layer.
func WithChrootNames() ApplyOption {
	return func(o *applyOptions) { o.chroot = true }
}

// WithNoSameOwner leaves every extracted entry owned by the caller instead
// of the uid/gid recorded in the tar.
func WithNoSameOwner() ApplyOption {
	return func(o *applyOptions) { o.sameOwner = false }
}

// WithChown gives every extracted entry the owner uid:gid.
func WithChown(uid, gid int) ApplyOption {
	return func(o *applyOptions) { o.chown = &[2]int{uid, gid} }
}

// WithLimits bounds the uncompressed bytes read (and file content written)
// and the number of entries. A value <= 0 keeps the default.
func WithLimits(maxBytes int64, maxEntries int) ApplyOption {
	return func(o *applyOptions) {
		if maxBytes > 0 {
			o.maxBytes = maxBytes
		}
		if maxEntries > 0 {
			o.maxEntries = maxEntries
		}
	}
}

// WithWarn receives non-fatal problems: device nodes that cannot be created
// in a user namespace, xattrs the filesystem refuses, skipped entries.
func WithWarn(fn func(msg string)) ApplyOption {
	return func(o *applyOptions) { o.warn = fn }
}

// Apply extracts the uncompressed layer tar r into the directory root and
// returns the number of bytes read from r (the whole stream, so a caller
// hashing r sees every byte).
//
// Every entry is resolved inside root at write time, following symlinks that
// already exist in root as if root were "/": an absolute symlink var/run ->
// /run leads to <root>/run, and nothing is ever created, changed or removed
// outside root. Entry names and hardlink targets that climb out of root with
// ".." are rejected with ErrUnsafePath. Writes go through directory file
// descriptors opened without following the final component.
//
// By default r is an image layer applied onto a full root: ".wh.<name>"
// deletes <name> and ".wh..wh..opq" empties the lower content of its
// directory (entries already extracted from r stay). A directory entry
// whose name starts with ".wh." is an ordinary directory. See
// WithOverlayWhiteouts and WithNoWhiteouts for the other formats.
func Apply(ctx context.Context, root string, r io.Reader, opts ...ApplyOption) (int64, error) {
	o := applyOptions{sameOwner: true, maxBytes: DefaultApplyMaxBytes, maxEntries: DefaultApplyMaxEntries}
	for _, opt := range opts {
		opt(&o)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return 0, fmt.Errorf("apply layer to %s: %w", root, err)
	}
	rootDir, err := os.OpenFile(abs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("apply layer to %s: %w", root, err)
	}
	defer rootDir.Close()

	in := &axLimitReader{ctx: ctx, r: r, limit: o.maxBytes}
	a := &applier{ctx: ctx, root: abs, rootDir: rootDir, opts: o, extracted: map[string]struct{}{}}
	err = a.run(tar.NewReader(in))
	if err == nil {
		err = a.finish()
	}
	if err == nil {
		_, err = io.Copy(io.Discard, in)
	}
	if err != nil {
		return in.n, err // names the entry; callers name the layer or archive
	}
	return in.n, nil
}

// applier holds the state of one Apply call.
type applier struct {
	ctx     context.Context
	root    string
	rootDir *os.File
	opts    applyOptions

	entries int
	written int64
	buf     []byte
	// extracted holds the cleaned names of entries (and their ancestors)
	// written from this tar, which an opaque marker must keep.
	extracted map[string]struct{}
	// dirs are directories whose times are set after all their content.
	dirs []*tar.Header
}

func (a *applier) run(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		a.entries++
		if a.entries > a.opts.maxEntries {
			return fmt.Errorf("%w: more than %d entries", ErrApplyLimit, a.opts.maxEntries)
		}
		if err := a.entry(hdr, tr); err != nil {
			return fmt.Errorf("entry %s: %w", axQuote(hdr.Name), err)
		}
	}
}

func (a *applier) warnf(format string, args ...any) {
	if a.opts.warn != nil {
		a.opts.warn(fmt.Sprintf(format, args...))
	}
}

// entry applies one tar header and its body.
func (a *applier) entry(hdr *tar.Header, body io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := axCleanName(hdr.Name, a.opts.chroot)
	if err != nil {
		return err
	}
	if err := axCheckHeader(hdr); err != nil {
		return err
	}
	if a.opts.whiteouts != axWhiteoutsNone {
		if first, _, _ := strings.Cut(name, "/"); strings.HasPrefix(first, aufsMetaPrefix) && first != opaqueMarker {
			a.warnf("skip aufs metadata entry %q", hdr.Name)
			return nil
		}
		if base := path.Base(name); hdr.Typeflag != tar.TypeDir && strings.HasPrefix(base, whiteoutPrefix) {
			return a.whiteout(name, base)
		}
	}
	if name == "." {
		// The root is the destination's, not the archive's: containerd's
		// unpacker skips an entry that resolves to it and moby's (ADD)
		// one named ".", whatever its type, so its owner, mode and times
		// stay.
		return nil
	}
	dir, err := a.parent(path.Dir(name), true)
	if err != nil {
		return err
	}
	defer dir.Close()
	created, err := a.create(int(dir.Fd()), path.Base(name), hdr, body)
	if err != nil || !created {
		return err
	}
	a.markExtracted(name)
	t := axTarget{dir: int(dir.Fd()), base: path.Base(name)}
	if hdr.Typeflag == tar.TypeLink {
		return a.linkMetadata(t, hdr)
	}
	return a.metadata(t, hdr)
}

// linkMetadata applies a hardlink entry's owner, xattrs, mode and times
// to the regular file it shares, as containerd's and moby's unpackers do
// (the last header of an inode wins); a link to anything else keeps the
// metadata its first entry gave it.
func (a *applier) linkMetadata(t axTarget, hdr *tar.Header) error {
	var st unix.Stat_t
	if err := unix.Fstatat(t.dir, t.base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat %s: %w", t.base, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	return a.metadata(t, hdr)
}

// axCleanName turns a tar entry name into a clean relative path ("." for
// the root itself), rejecting names that climb above the root unless
// chroot is set (then ".." stops at the root).
func axCleanName(name string, chroot bool) (string, error) {
	if name == "" {
		return "", errors.New("empty entry name")
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", errors.New("entry name contains a NUL byte")
	}
	depth := 0
	for _, part := range strings.Split(name, "/") {
		switch part {
		case "", ".":
		case "..":
			depth--
			if depth < 0 && !chroot {
				return "", ErrUnsafePath
			}
			depth = max(depth, 0)
		default:
			depth++
		}
	}
	clean := path.Clean("/" + name) // a ".." past the root stops there
	if clean == "/" {
		return ".", nil
	}
	return clean[1:], nil
}

// axCheckHeader rejects entry types and numbers Apply cannot honour.
func axCheckHeader(hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
	case tar.TypeChar, tar.TypeBlock:
		if hdr.Devmajor < 0 || hdr.Devmajor > 0xffffffff || hdr.Devminor < 0 || hdr.Devminor > 0xffffffff {
			return fmt.Errorf("invalid device number %d:%d", hdr.Devmajor, hdr.Devminor)
		}
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	if hdr.Uid < 0 || hdr.Uid > 0xfffffffe || hdr.Gid < 0 || hdr.Gid > 0xfffffffe {
		return fmt.Errorf("invalid owner %d:%d", hdr.Uid, hdr.Gid)
	}
	return nil
}

// markExtracted records name and its ancestors as written by this tar.
func (a *applier) markExtracted(name string) {
	if a.opts.whiteouts != axWhiteoutsLayer {
		return
	}
	for ; name != "." && name != "/"; name = path.Dir(name) {
		if _, ok := a.extracted[name]; ok {
			return
		}
		a.extracted[name] = struct{}{}
	}
}

// parent opens the directory dir (a clean relative name) resolved inside
// the root, creating missing directories when create is set. Symlinks in
// dir are followed with the root as "/", dangling ones included.
func (a *applier) parent(dir string, create bool) (*os.File, error) {
	resolved, err := securejoin.SecureJoin(a.root, dir)
	if err != nil {
		return nil, fmt.Errorf("resolve parent directory: %w", axBareErr(err))
	}
	rel, err := filepath.Rel(a.root, resolved)
	if err != nil {
		return nil, fmt.Errorf("resolve parent directory: %w", err)
	}
	if create {
		if a.opts.chroot {
			if err := a.noDanglingLink(dir, resolved); err != nil {
				return nil, fmt.Errorf("create parent directory: %w", err)
			}
		}
		f, err := pathrs.MkdirAllHandle(a.rootDir, rel, 0o755)
		if err != nil {
			return nil, fmt.Errorf("create parent directory: %w", axBareErr(err))
		}
		return f, nil
	}
	f, err := pathrs.OpenatInRoot(a.rootDir, rel)
	if err != nil {
		return nil, fmt.Errorf("open parent directory: %w", axBareErr(err))
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		f.Close()
		return nil, fmt.Errorf("open parent directory: %w", unix.ENOTDIR)
	}
	return f, nil
}

// noDanglingLink fails when the parent directory dir (resolved inside the
// root as resolved) does not exist and one of its components is a symlink
// that leads nowhere: moby's chrootarchive (BuildKit's ADD) makes missing
// directories with os.MkdirAll, which stops at such a link, where an image
// layer's unpack (containerd's) makes the directory it points to.
func (a *applier) noDanglingLink(dir, resolved string) error {
	var st unix.Stat_t
	if err := unix.Lstat(resolved, &st); err == nil || !errors.Is(err, unix.ENOENT) {
		return nil // there, or a problem the directory's creation reports
	}
	cur := ""
	for _, part := range strings.Split(dir, "/") {
		cur = path.Join(cur, part)
		res, err := securejoin.SecureJoin(a.root, cur)
		if err != nil {
			return axBareErr(err)
		}
		if unix.Lstat(res, &st) == nil {
			continue
		}
		up, err := securejoin.SecureJoin(a.root, path.Dir(cur))
		if err != nil {
			return axBareErr(err)
		}
		if unix.Lstat(filepath.Join(up, part), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return fmt.Errorf("%s is a symlink that leads nowhere: %w", axQuote(cur), unix.ENOENT)
		}
		return nil // a missing directory: it and those below are made
	}
	return nil
}

// axBareErr drops the host paths that path errors carry: the entry name
// already locates the problem, and host paths of the root only add noise.
func axBareErr(err error) error {
	var pe *os.PathError
	for errors.As(err, &pe) {
		err = pe.Err
	}
	var errno unix.Errno // pathrs' own errors carry host paths too
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// axQuote quotes an entry name for an error, shortening huge names.
func axQuote(name string) string {
	if len(name) <= 256 {
		return strconv.Quote(name)
	}
	return fmt.Sprintf("%q...%q (%d bytes)", name[:120], name[len(name)-120:], len(name))
}

// create makes the entry base in the directory dirfd, replacing what is
// there (a directory over a directory keeps it). It reports false when the
// entry was skipped.
func (a *applier) create(dirfd int, base string, hdr *tar.Header, body io.Reader) (bool, error) {
	kept, err := axReplace(dirfd, base, hdr.Typeflag == tar.TypeDir)
	if err != nil {
		return false, err
	}
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if !kept {
			err = unix.Mkdirat(dirfd, base, 0o700)
		}
	case tar.TypeSymlink:
		err = unix.Symlinkat(hdr.Linkname, dirfd, base)
	case tar.TypeLink:
		err = a.hardlink(dirfd, base, hdr.Linkname)
	case tar.TypeFifo:
		err = unix.Mknodat(dirfd, base, unix.S_IFIFO|mode, 0)
	case tar.TypeChar, tar.TypeBlock:
		return a.device(dirfd, base, hdr)
	default:
		err = a.regular(dirfd, base, hdr.Size, body)
	}
	return err == nil, err
}

// axReplace removes whatever is at base in dirfd, without following it,
// unless keepDir is set and it is a directory (then it reports true).
func axReplace(dirfd int, base string, keepDir bool) (bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", base, err)
	}
	if keepDir && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return true, nil
	}
	return false, axRemoveAll(dirfd, base)
}

// axRemoveAll removes name in dirfd and, if it is a directory, everything
// below it, never following symlinks.
func axRemoveAll(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	d := os.NewFile(uintptr(fd), name)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	for _, child := range names {
		if err := axRemoveAll(fd, child); err != nil {
			return fmt.Errorf("remove %s: %w", name, err)
		}
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// regular writes a regular file of size bytes from body.
func (a *applier) regular(dirfd int, base string, size int64, body io.Reader) error {
	if size > a.opts.maxBytes-a.written {
		return fmt.Errorf("%w: more than %d bytes of file content", ErrApplyLimit, a.opts.maxBytes)
	}
	a.written += size
	fd, err := unix.Openat(dirfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", base, err)
	}
	f := os.NewFile(uintptr(fd), base)
	if a.buf == nil {
		a.buf = make([]byte, 1<<20)
	}
	_, err = io.CopyBuffer(f, axCtxReader{ctx: a.ctx, r: body}, a.buf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", base, err)
	}
	return nil
}

// hardlink links base in dirfd to the entry linkname, resolved inside the
// root like any entry name (its final component is not followed).
func (a *applier) hardlink(dirfd int, base, linkname string) error {
	target, err := axCleanName(linkname, a.opts.chroot)
	if err != nil {
		return fmt.Errorf("hardlink target %s: %w", axQuote(linkname), err)
	}
	if target == "." {
		return fmt.Errorf("hardlink target %q is the root", linkname)
	}
	tdir, err := a.parent(path.Dir(target), false)
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", linkname, err)
	}
	defer tdir.Close()
	if err := unix.Linkat(int(tdir.Fd()), path.Base(target), dirfd, base, 0); err != nil {
		return fmt.Errorf("hardlink to %q: %w", linkname, err)
	}
	return nil
}

// device creates a character or block device; without the privilege to do
// so (user namespaces) an empty regular file that records it.
func (a *applier) device(dirfd int, base string, hdr *tar.Header) (bool, error) {
	kind := uint32(unix.S_IFCHR)
	if hdr.Typeflag == tar.TypeBlock {
		kind = unix.S_IFBLK
	}
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	err := unix.Mknodat(dirfd, base, kind|uint32(hdr.Mode&0o7777), int(dev))
	if errors.Is(err, unix.EPERM) {
		// A user namespace: a stand-in records the device (override.go).
		err = deviceStandIn(dirfd, base, hdr.Name, kind, dev)
	}
	if err != nil {
		return false, fmt.Errorf("mknod %s: %w", base, err)
	}
	return true, nil
}

// whiteout handles a ".wh."-prefixed non-directory entry.
func (a *applier) whiteout(name, base string) error {
	overlay := a.opts.whiteouts == axWhiteoutsOverlay
	dir, err := a.parent(path.Dir(name), overlay)
	if !overlay && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)) {
		return nil // nothing below a missing directory to delete
	}
	if err != nil {
		return err
	}
	defer dir.Close()
	dirfd := int(dir.Fd())
	if base == opaqueMarker {
		if overlay {
			err := axSetxattr(axTarget{dir: dirfd}, opaqueXattr, "y")
			if errors.Is(err, unix.EPERM) {
				// A user namespace, where overlayfs reads user.* (userxattr).
				err = axSetxattr(axTarget{dir: dirfd}, userOpaque, "y")
			}
			return err
		}
		return a.opaque(dirfd, path.Dir(name))
	}
	victim := strings.TrimPrefix(base, whiteoutPrefix)
	if victim == "" || victim == "." || victim == ".." {
		return fmt.Errorf("invalid whiteout %q", base)
	}
	if !overlay {
		delete(a.extracted, path.Join(path.Dir(name), victim))
		return axRemoveAll(dirfd, victim)
	}
	if _, err := axReplace(dirfd, victim, false); err != nil {
		return err
	}
	if err := unix.Mknodat(dirfd, victim, unix.S_IFCHR, 0); err != nil {
		return whiteoutError(victim, err)
	}
	return nil
}

// opaque removes from the directory dirfd (entry name dname) everything
// not extracted from this tar, descending into kept directories.
func (a *applier) opaque(dirfd int, dname string) error {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dname, err)
	}
	d := os.NewFile(uintptr(fd), dname)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("list %s: %w", dname, err)
	}
	sort.Strings(names)
	for _, child := range names {
		cname := path.Join(dname, child)
		if _, ok := a.extracted[cname]; !ok {
			if err := axRemoveAll(fd, child); err != nil {
				return err
			}
			continue
		}
		if err := a.opaqueChild(fd, child, cname); err != nil {
			return err
		}
	}
	return nil
}

// opaqueChild descends into the kept entry child of dirfd if it is a
// directory.
func (a *applier) opaqueChild(dirfd int, child, cname string) error {
	cfd, err := unix.Openat(dirfd, child, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", cname, err)
	}
	defer unix.Close(cfd)
	return a.opaque(cfd, cname)
}

// finish sets directory times now that their content is in place.
func (a *applier) finish() error {
	for i := len(a.dirs) - 1; i >= 0; i-- {
		hdr := a.dirs[i]
		name, _ := axCleanName(hdr.Name, a.opts.chroot)
		if err := a.dirTimes(name, hdr); err != nil {
			return fmt.Errorf("entry %s: %w", axQuote(hdr.Name), err)
		}
	}
	return nil
}

// dirTimes sets the times of directory name if it is still a directory.
func (a *applier) dirTimes(name string, hdr *tar.Header) error {
	dir, err := a.parent(path.Dir(name), false)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil // removed by a later entry
	}
	if err != nil {
		return err
	}
	defer dir.Close()
	t := axTarget{dir: int(dir.Fd()), base: path.Base(name)}
	var st unix.Stat_t
	if err := unix.Fstatat(t.dir, t.base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	return axUtimes(t, hdr)
}

// axLimitReader counts the bytes read, fails past limit and stops when ctx
// is cancelled.
type axLimitReader struct {
	ctx   context.Context
	r     io.Reader
	n     int64
	limit int64
}

func (c *axLimitReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	if c.n >= c.limit {
		var probe [1]byte
		k, err := c.r.Read(probe[:])
		if k > 0 {
			return 0, fmt.Errorf("%w: more than %d bytes", ErrApplyLimit, c.limit)
		}
		return 0, err
	}
	if int64(len(p)) > c.limit-c.n {
		p = p[:c.limit-c.n]
	}
	k, err := c.r.Read(p)
	c.n += int64(k)
	return k, err
}

// axCtxReader stops reading when ctx is cancelled.
type axCtxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c axCtxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// axTarget names an entry for metadata calls: base inside the directory
// descriptor dir, or the directory dir itself when base is empty.
type axTarget struct {
	dir  int
	base string
}

// procPath is a path that reaches the target through the pinned descriptor:
// the kernel jumps to dir itself, then looks up base without leaving it.
func (t axTarget) procPath() string {
	p := "/proc/self/fd/" + strconv.Itoa(t.dir)
	if t.base != "" {
		p += "/" + t.base
	}
	return p
}

// metadata applies ownership, xattrs, mode and times, in that order: chown
// clears setuid/setgid bits and security.capability.
func (a *applier) metadata(t axTarget, hdr *tar.Header) error {
	if err := a.chown(t, hdr); err != nil {
		return err
	}
	if err := a.xattrs(t, hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := axChmod(t, uint32(hdr.Mode&0o7777)); err != nil {
			return err
		}
	}
	if hdr.Typeflag == tar.TypeDir {
		a.dirs = append(a.dirs, hdr)
		return nil
	}
	return axUtimes(t, hdr)
}

func (a *applier) chown(t axTarget, hdr *tar.Header) error {
	uid, gid := hdr.Uid, hdr.Gid
	if a.opts.chown != nil {
		uid, gid = a.opts.chown[0], a.opts.chown[1]
	} else if !a.opts.sameOwner {
		return nil
	}
	flags := unix.AT_SYMLINK_NOFOLLOW
	if t.base == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	chown := func(u, g int) error { return unix.Fchownat(t.dir, t.base, u, g, flags) }
	canRecord := hdr.Typeflag != tar.TypeSymlink && hdr.Typeflag != tar.TypeFifo
	// A kept directory or the file a hardlink shares may hold an owner
	// record of an earlier entry.
	existed := hdr.Typeflag == tar.TypeDir || hdr.Typeflag == tar.TypeLink
	lost, err := chownOrRecord(chown, t.procPath(), uid, gid, canRecord, existed)
	if err != nil {
		return fmt.Errorf("chown %d:%d: %w", uid, gid, err)
	}
	if lost {
		a.warnf("%q is stored owned by root: the user namespace does not map %d:%d", hdr.Name, uid, gid)
	}
	return nil
}

// xattrs sets the SCHILY.xattr.* PAX records. Overlay metadata xattrs are
// never taken from a tar; xattrs the filesystem refuses are warnings.
func (a *applier) xattrs(t axTarget, hdr *tar.Header) error {
	var names []string
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, axPAXXattr) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		name := strings.TrimPrefix(k, axPAXXattr)
		if strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") || name == overrideXattr {
			a.warnf("skip xattr %s of %q", name, hdr.Name)
			continue
		}
		err := axSetxattr(t, name, hdr.PAXRecords[k])
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) {
			a.warnf("skip xattr %s of %q: %v", name, hdr.Name, err)
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func axSetxattr(t axTarget, name, value string) error {
	var err error
	if t.base == "" {
		err = unix.Setxattr(t.procPath(), name, []byte(value), 0)
	} else {
		err = unix.Lsetxattr(t.procPath(), name, []byte(value), 0)
	}
	if err != nil {
		return fmt.Errorf("set xattr %s: %w", name, err)
	}
	return nil
}

// axChmod sets the permission bits (with setuid, setgid, sticky) of a
// target that is not a symlink, through an O_PATH descriptor of it.
func axChmod(t axTarget, mode uint32) error {
	p := t.procPath()
	if t.base != "" {
		fd, err := unix.Openat(t.dir, t.base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("chmod %s: %w", t.base, err)
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("chmod %s: %w", t.base, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return nil
		}
		p = "/proc/self/fd/" + strconv.Itoa(fd)
	}
	if err := unix.Fchmodat(unix.AT_FDCWD, p, mode, 0); err != nil {
		return fmt.Errorf("chmod %o: %w", mode, err)
	}
	return nil
}

// boundTime is t, or the Unix epoch for a time before it or after the
// last one nanoseconds since it fit in an int64 (in 2262): an archive's
// entry dated 1960, or 3000, is extracted dated 1970-01-01.
func boundTime(t time.Time) time.Time {
	if t.Before(time.Unix(0, 0)) || t.After(time.Unix(0, math.MaxInt64)) {
		return time.Unix(0, 0)
	}
	return t
}

// axUtimes sets access and modification times without following
// symlinks, each bounded as containerd's archive.Apply (BuildKit's ADD
// and image unpacking) bounds them.
func axUtimes(t axTarget, hdr *tar.Header) error {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	at, err := unix.TimeToTimespec(boundTime(atime))
	if err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	mt, err := unix.TimeToTimespec(boundTime(hdr.ModTime))
	if err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	ts := []unix.Timespec{at, mt}
	if t.base == "" {
		err = unix.UtimesNanoAt(unix.AT_FDCWD, t.procPath(), ts, 0)
	} else {
		err = unix.UtimesNanoAt(t.dir, t.base, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}
