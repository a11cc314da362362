package executor

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/builder-dev/builder/internal/user"
	"github.com/builder-dev/builder/snapshot"
	"golang.org/x/sys/unix"
)

// copyOwner is the uid/gid of written files (0:0 without --chown).
type copyOwner struct{ uid, gid int }

// Apply writes the plan into rootfs, the step's mounted root, one source
// after the other as BuildKit's file op copies them (fsutil's Copy with
// CopyDirContents). The destination and every parent are resolved inside
// rootfs at write time (securejoin), so absolute symlinks in the image
// resolve inside it. Directories made for the destination get dirMode,
// owned by --chown (root without it).
func (p *copyPlan) Apply(ctx context.Context, rootfs string) error {
	own, err := p.owner(rootfs)
	if err != nil {
		return err
	}
	if len(p.pivots) > 0 {
		if err := mkdirAllIn(rootfs, p.dest, p.dirMode(), own); err != nil {
			return err
		}
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
		if err := p.applySource(ctx, rootfs, s, own); err != nil {
			return err
		}
	}
	return copySetDirTimes(rootfs, created)
}

// dirMode is the mode of the directories COPY/ADD makes for its
// destination: an octal --chmod's permission bits (its setuid, setgid and
// sticky bits are dropped, as os.Mkdir drops them from fsutil's
// os.FileMode(mode)), 0755 otherwise; a symbolic --chmod does not apply.
func (p *copyPlan) dirMode() uint32 {
	if p.chmod != nil && p.chmod.actions == nil {
		return p.chmod.octal & 0o777
	}
	return 0o755
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

// applySource copies one source as fsutil's Copy does: the destination
// (written as a directory) or its parent is made first; a directory's
// contents go into the destination; anything else goes into it when it is
// a directory by now (made by this step's earlier sources too) and
// replaces it otherwise, so several sources into a destination without a
// slash each land there in turn (BuildKit's testExcludedFilesOnCopy).
func (p *copyPlan) applySource(ctx context.Context, rootfs string, s *copySource, own copyOwner) error {
	if s.git != nil {
		return p.applyGit(ctx, rootfs, s, own)
	}
	if s.archive {
		return p.addExtract(ctx, rootfs, s, own)
	}
	if s.url != nil && s.url.file == "" { // revalidated, not fetched yet
		if err := p.fetcher().fetch(ctx, s.url); err != nil {
			return err
		}
		s.entries[0].host = s.url.file
	}
	parent := path.Dir(p.dest)
	if p.destDir {
		parent = p.dest
	}
	if err := mkdirAllIn(rootfs, parent, p.dirMode(), own); err != nil {
		return err
	}
	top := s.entries[0]
	if top.kind == copyDir {
		return p.applyTree(ctx, rootfs, p.dest, s, own)
	}
	isDir, err := copyIsDir(rootfs, p.dest)
	if err != nil {
		return err
	}
	dst := p.dest
	if isDir {
		dst = path.Join(p.dest, s.name)
	}
	return p.writeEntry(rootfs, dst, s, top, own, nil)
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

// applyTree copies a directory's contents into dst. A missing dst is made
// like the destination's parents (dirMode, --chown or root), not with the
// source directory's mode or owner; either way dst ends with the source
// directory's mtime, as fsutil restores it.
func (p *copyPlan) applyTree(ctx context.Context, rootfs, dst string, s *copySource, own copyOwner) error {
	host, err := copyHostPath(rootfs, dst)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(host); err == nil && !fi.IsDir() {
		return fmt.Errorf("cannot copy to non-directory: %s", dst)
	}
	if err := mkdirAllIn(rootfs, dst, p.dirMode(), own); err != nil {
		return err
	}
	top := s.entries[0]
	top.rel = dst
	dirs, err := p.writeTree(ctx, rootfs, dst, s, s.entries[1:], own)
	if err != nil {
		return err
	}
	return copySetDirTimes(rootfs, append([]copyEntry{top}, dirs...))
}

// writeTree writes entries of s below dst and returns the directories it
// wrote, rel inside rootfs, whose times are to be set once all is in.
func (p *copyPlan) writeTree(ctx context.Context, rootfs, dst string, s *copySource, entries []copyEntry, own copyOwner) ([]copyEntry, error) {
	var dirs []copyEntry
	written := map[string]string{}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := p.writeEntry(rootfs, path.Join(dst, e.rel), s, e, own, written); err != nil {
			return nil, err
		}
		if e.kind == copyDir {
			e.rel = path.Join(dst, e.rel)
			dirs = append(dirs, e)
		}
	}
	return dirs, nil // children change a dir's mtime
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
	if p.keepsOwners() {
		own = copyOwner{uid: e.uid, gid: e.gid}
	}
	return copyFinish(host, dst, e, mode, own)
}

// keepsOwners reports whether written files keep their source's owner: a
// COPY --from a stage or image without --chown (BuildKit's rule; files
// from the build context become 0:0).
func (p *copyPlan) keepsOwners() bool {
	return p.req.SrcRoot != "" && p.req.Chown == ""
}

func (p *copyPlan) writeFile(host string, s *copySource, e copyEntry) error {
	var r io.Reader
	switch {
	case s.data != nil:
		r = strings.NewReader(string(s.data))
	case e.host == "":
		r = strings.NewReader("") // a socket: an empty file
	default:
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
	if err := snapshot.Lchown(host, own.uid, own.gid); err != nil {
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
