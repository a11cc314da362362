package executor

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"github.com/builder-dev/builder/snapshot"
	securejoin "github.com/cyphar/filepath-securejoin"
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
	uid, gid, err := resolveChown(rootfs, p.req.Chown, p.req.OS)
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
	top := s.entries[0]
	made := false // whether this step makes the directory dest
	if p.upper != nil && top.kind == copyDir {
		host, err := copyHostPath(rootfs, p.dest)
		if err != nil {
			return err
		}
		made = p.upper.makesDir(host)
	}
	if err := mkdirAllIn(rootfs, parent, p.dirMode(), own); err != nil {
		return err
	}
	if top.kind == copyDir {
		return p.applyTree(ctx, rootfs, p.dest, s, own, made)
	}
	isDir, err := copyIsDir(rootfs, p.dest)
	if err != nil {
		return err
	}
	dst := p.dest
	if isDir {
		dst = path.Join(p.dest, s.name)
	} else if dst, err = p.followDest(rootfs, own); err != nil {
		return err
	}
	return p.writeEntry(rootfs, dst, s, top, own)
}

// followDest is where a source that is not a directory goes when the
// destination is not a directory: the destination with its symlinks
// followed inside rootfs, the last one too, as BuildKit's copy resolves
// it (fsutil's RootPath). So COPY onto /etc/localtime, a link to a
// zoneinfo file, writes that file and leaves the link, and onto a link
// to a missing file creates the file, with the missing directories
// above it made like the destination's parents.
func (p *copyPlan) followDest(rootfs string, own copyOwner) (string, error) {
	host, err := securejoin.SecureJoin(rootfs, p.dest)
	if err != nil {
		return "", fmt.Errorf("resolve %s in rootfs: %w", p.dest, err)
	}
	rel, err := filepath.Rel(filepath.Clean(rootfs), host)
	if err != nil {
		return "", fmt.Errorf("resolve %s in rootfs: %w", p.dest, err)
	}
	dst := path.Clean("/" + filepath.ToSlash(rel))
	if dst == path.Clean(p.dest) {
		return p.dest, nil
	}
	if err := mkdirAllIn(rootfs, path.Dir(dst), p.dirMode(), own); err != nil {
		return "", err
	}
	return dst, nil
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
//
// made tells ApplyDirect that this step makes dst, which the caller may
// have made already; applyTree also finds out itself when dst is missing.
func (p *copyPlan) applyTree(ctx context.Context, rootfs, dst string, s *copySource, own copyOwner, made bool) error {
	host, err := copyHostPath(rootfs, dst)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(host); err == nil && !fi.IsDir() {
		return fmt.Errorf("cannot copy to non-directory: %s", dst)
	}
	made = p.upper != nil && (made || p.upper.makesDir(host))
	if err := mkdirAllIn(rootfs, dst, p.dirMode(), own); err != nil {
		return err
	}
	top := s.entries[0]
	top.rel = dst
	var times []copyEntry
	if made {
		p.upper.madeDir(s, host, top)
	} else {
		times = append(times, top)
	}
	dirs, err := p.writeTree(ctx, rootfs, dst, s, s.entries[1:], own)
	if err != nil {
		return err
	}
	return copySetDirTimes(rootfs, append(times, dirs...))
}

// writeTree writes entries of s below dst and returns the directories it
// wrote, rel inside rootfs, whose times are to be set once all is in.
// Directories are made first, in order, a parent before its children;
// then the other entries, each at a distinct path whose parent exists by
// then, on parallel workers; hardlinks last, once the files they name are
// in. An entry's parent is resolved inside rootfs once, when it is dst, or
// is the directory this step just made or kept there (a real directory,
// which no later entry replaces: a directory is never replaced by a file).
func (p *copyPlan) writeTree(ctx context.Context, rootfs, dst string, s *copySource, entries []copyEntry, own copyOwner) ([]copyEntry, error) {
	var dirs []copyEntry
	var jobs []copyJob
	var links []int
	hosts := make([]string, len(entries)) // where each entry goes
	index := make(map[string]int, len(entries))
	dirHost := map[string]string{} // a directory's rel ("." for dst) → its host path
	hostOf := func(rel string) (string, error) {
		if rel == "" {
			return copyHostPath(rootfs, dst)
		}
		dir := path.Dir(rel)
		if _, ok := dirHost[dir]; !ok && dir == "." {
			// dst, a directory when it has entries below it
			h, err := securejoin.SecureJoin(rootfs, dst)
			if err != nil {
				return "", fmt.Errorf("resolve %s in rootfs: %w", dst, err)
			}
			dirHost[dir] = h
		}
		if parent, ok := dirHost[dir]; ok {
			return filepath.Join(parent, path.Base(rel)), nil
		}
		return copyHostPath(rootfs, path.Join(dst, rel))
	}
	cp := &copier{}
	for i := range entries {
		e := &entries[i]
		index[e.rel] = i
		host, err := hostOf(e.rel)
		if err != nil {
			return nil, err
		}
		hosts[i] = host
		switch e.kind {
		case copyDir:
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			made := p.upper != nil && p.upper.mkdir(host)
			if err := p.writeEntryAt(cp, host, path.Join(dst, e.rel), s, e, own, ""); err != nil {
				return nil, err
			}
			dirHost[cmp.Or(e.rel, ".")] = host
			if made {
				p.upper.madeDir(s, host, *e) // its times are set in the upper dir
				continue
			}
			d := *e
			d.rel = path.Join(dst, e.rel)
			dirs = append(dirs, d) // children change a dir's mtime
		case copyHardlink:
			links = append(links, i)
		default:
			if p.upper != nil && p.upper.leave(s, host, path.Join(dst, e.rel), e, own) {
				continue
			}
			jobs = append(jobs, copyJob{dir: path.Dir(e.rel), run: func(context.Context) error {
				return p.writeEntryAt(cp, host, path.Join(dst, e.rel), s, e, own, "")
			}})
		}
	}
	if err := copyParallel(ctx, copyInterleave(jobs)); err != nil {
		return nil, err
	}
	for _, i := range links {
		e := &entries[i]
		first, ok := index[e.link]
		if !ok || entries[first].kind == copyHardlink {
			return nil, fmt.Errorf("copy to %s: hardlink to %s, which is not copied", path.Join(dst, e.rel), e.link)
		}
		if err := p.writeEntryAt(cp, hosts[i], path.Join(dst, e.rel), s, e, own, hosts[first]); err != nil {
			return nil, err
		}
	}
	return dirs, nil
}

// copyJob writes one entry of the directory dir.
type copyJob struct {
	dir string
	run func(context.Context) error
}

// copyInterleave orders jobs so that the parallel writers take entries of
// different directories — a file system serializes the creations in one
// directory (its lock), not those in several — in runs of up to
// copyBatch entries of one directory, which keep each writer's creations
// close together on disk (ext4 places a file's inode near its
// directory's) as a sequential copy's are.
func copyInterleave(jobs []copyJob) []func(context.Context) error {
	var dirs [][]copyJob
	at := map[string]int{}
	for _, j := range jobs {
		i, ok := at[j.dir]
		if !ok {
			i = len(dirs)
			at[j.dir] = i
			dirs = append(dirs, nil)
		}
		dirs[i] = append(dirs[i], j)
	}
	var out []func(context.Context) error
	for left := len(jobs); left > 0; {
		for i := range dirs {
			if len(dirs[i]) == 0 {
				continue
			}
			run := dirs[i][:min(copyBatch, len(dirs[i]))]
			dirs[i] = dirs[i][len(run):]
			left -= len(run)
			out = append(out, func(ctx context.Context) error {
				for _, j := range run {
					if err := ctx.Err(); err != nil {
						return err
					}
					if err := j.run(ctx); err != nil {
						return err
					}
				}
				return nil
			})
		}
	}
	return out
}

// copyBatch is the most entries of one directory a writer takes at once.
const copyBatch = 32

// writeEntry writes one entry at dst (absolute inside rootfs), its parent
// resolved inside rootfs (writeEntryAt).
func (p *copyPlan) writeEntry(rootfs, dst string, s *copySource, e copyEntry, own copyOwner) error {
	host, err := copyHostPath(rootfs, dst)
	if err != nil {
		return err
	}
	return p.writeEntryAt(&copier{}, host, dst, s, &e, own, "")
}

// writeEntryAt writes one entry at host, the path of dst in the rootfs.
// An existing non-directory there is replaced, never written through. A
// hardlink is made to linkTo, the host path of its first name.
func (p *copyPlan) writeEntryAt(cp *copier, host, dst string, s *copySource, e *copyEntry, own copyOwner, linkTo string) error {
	mode := e.mode
	if p.chmod != nil && (e.kind == copyFile || e.kind == copyDir) {
		mode = copyUnixMode(p.chmod.apply(copyModeBits(e.mode), e.kind == copyDir))
	}
	if p.keepsOwners() {
		own = copyOwner{uid: e.uid, gid: e.gid}
	}
	if e.kind == copyDir {
		if err := copyClear(host, dst, true); err != nil {
			return err
		}
		if err := copyMkdir(host); err != nil {
			return fmt.Errorf("copy to %s: %w", dst, err)
		}
		return copyFinish(host, dst, *e, mode, own)
	}
	// Anything else is created exclusively (never through an existing
	// entry); what is in the way is cleared and the creation retried.
	err := p.create(cp, host, dst, s, e, mode, own, linkTo)
	if errors.Is(err, fs.ErrExist) {
		if err := copyClear(host, dst, false); err != nil {
			return err
		}
		err = p.create(cp, host, dst, s, e, mode, own, linkTo)
	}
	if err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if e.kind == copyFile || e.kind == copyHardlink {
		return nil // a file is finished through its descriptor
	}
	return copyFinish(host, dst, *e, mode, own)
}

// create makes the non-directory entry e at host, which must not exist.
func (p *copyPlan) create(cp *copier, host, dst string, s *copySource, e *copyEntry, mode fs.FileMode, own copyOwner, linkTo string) error {
	switch e.kind {
	case copyFile:
		return p.writeFile(cp, host, dst, s, e, mode, own)
	case copyHardlink:
		return os.Link(linkTo, host)
	case copySymlink:
		return os.Symlink(e.link, host)
	case copyFifo, copyDevice:
		return copyMknod(host, *e)
	}
	return fmt.Errorf("unknown entry kind %d", e.kind)
}

// keepsOwners reports whether written files keep their source's owner: a
// COPY --from a stage or image without --chown (BuildKit's rule; files
// from the build context become 0:0).
func (p *copyPlan) keepsOwners() bool {
	return p.req.SrcRoot != "" && p.req.Chown == ""
}

// writeFile creates the regular file host (which must not exist) with
// e's content, then gives it its owner, mode, xattrs and mtime through the
// open descriptor, in copyFinish's order.
func (p *copyPlan) writeFile(cp *copier, host, dst string, s *copySource, e *copyEntry, mode fs.FileMode, own copyOwner) error {
	out, err := copyOpen(host, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if err := writeContent(cp, out, s, e); err != nil {
		out.Close()
		return err
	}
	if err := copyFinishFile(out, dst, *e, mode, own); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeContent writes e's content to out: a heredoc's bytes, nothing for a
// socket, else the whole source file, copied in the kernel where it can.
func writeContent(cp *copier, out copyFD, s *copySource, e *copyEntry) error {
	switch {
	case s.data != nil:
		_, err := out.Write(s.data)
		return err
	case e.host == "":
		return nil // a socket: an empty file
	}
	f, err := copyOpen(e.host, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size := int64(-1)
	if e.info != nil {
		size = e.info.Size()
	}
	if err := copySameFile(f, e); err != nil {
		return err
	}
	if err := cp.copyData(out, f, size); err != nil {
		return err
	}
	return copyUnchanged(f, out, e)
}

// sourceStats returns the stat e's source had when it was selected (which
// its digest was checked against) and the stat of f, its open source now;
// was is nil when there is nothing to check.
func sourceStats(f copyFD, e *copyEntry) (was *syscall.Stat_t, now unix.Stat_t, err error) {
	if e.digest == "" || e.info == nil {
		return nil, now, nil
	}
	if was, _ = e.info.Sys().(*syscall.Stat_t); was == nil {
		return nil, now, nil
	}
	if err := unix.Fstat(f.fd, &now); err != nil {
		return nil, now, &os.PathError{Op: "stat", Path: f.name, Err: err}
	}
	return was, now, nil
}

// copySameFile checks, before anything is read, that the source f opened
// for entry e is the file that was selected (same inode): not one renamed
// over it, or reached through a directory swapped for a symlink since —
// perhaps to a file outside the context, whose content must not even be
// copied into the step's snapshot.
func copySameFile(f copyFD, e *copyEntry) error {
	was, st, err := sourceStats(f, e)
	if was == nil {
		return err
	}
	if st.Ino != was.Ino || uint64(st.Dev) != uint64(was.Dev) {
		return sourceChanged(fmt.Errorf("%s changed during the build: replaced by another file since it was selected", f.name))
	}
	return nil
}

// copyUnchanged checks that the source f of entry e, just copied to out,
// is still the file its digest (and so the step's cache key) was computed
// from: a file changed after it was hashed — while an earlier step ran,
// say — would otherwise put content in the layer that its key does not
// name, and a later build of the old content would get it from the cache.
// The source's stat must be the one it had when it was selected (what the
// hash was checked against; copySameFile checked its inode before the
// copy); if not, the copy itself is hashed, and must match.
func copyUnchanged(f, out copyFD, e *copyEntry) error {
	was, st, err := sourceStats(f, e)
	if was == nil {
		return err
	}
	if st.Size == was.Size && st.Mtim.Nano() == was.Mtim.Nano() && st.Ctim.Nano() == was.Ctim.Nano() {
		return nil
	}
	got, err := copyDigest(out.name)
	if err != nil {
		return err
	}
	if got != e.digest {
		return changedSinceHash(f.name, e.digest, got)
	}
	return nil
}

// changedSinceHash is the error for a source file whose content is no
// longer what the step's cache key was computed from.
func changedSinceHash(name, want, got string) error {
	return sourceChanged(fmt.Errorf("%s changed during the build, after it was hashed for the cache key (%s, now %s)", name, want, got))
}

// copyDigest is the sha256 digest of the file at name.
func copyDigest(name string) (string, error) {
	in, err := copyOpen(name, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer in.Close()
	h := sha256.New()
	if _, err := io.Copy(h, in); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// copyFinishFile is copyFinish for a regular file just created at dst
// and open as f: chown (no stale owner record to drop), chmod, xattrs and
// times through the descriptor.
func copyFinishFile(f copyFD, dst string, e copyEntry, mode fs.FileMode, own copyOwner) error {
	if err := snapshot.FchownNew(f.fd, f.name, own.uid, own.gid); err != nil {
		return fmt.Errorf("chown %s: %w", dst, err)
	}
	if err := unix.Fchmod(f.fd, copyModeBits(mode)); err != nil {
		return fmt.Errorf("chmod %s: %w", dst, err)
	}
	for k, v := range e.xattrs {
		if err := unix.Fsetxattr(f.fd, k, v, 0); err != nil {
			return fmt.Errorf("set xattr %s on %s: %w", k, dst, err)
		}
	}
	if err := futimens(f.fd, e.mtime); err != nil {
		return fmt.Errorf("set times of %s: %w", dst, err)
	}
	return nil
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
