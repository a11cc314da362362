package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// lowerDir is one directory of the union of a layer chain, as overlayfs
// shows it: the layer directories (top first) that contribute entries to it.
type lowerDir struct {
	rel    string
	layers []string
}

// lowerEntry is the topmost lower entry for a path.
type lowerEntry struct {
	path string
	st   unix.Stat_t
}

// rootLowerDir is the root of the union of layerDirs (bottom first).
func rootLowerDir(layerDirs []string) lowerDir {
	return lowerDir{rel: "", layers: stackDirs(layerDirs)}
}

// lookup returns the visible lower entry for name inside d, if any.
func (d lowerDir) lookup(name string) (lowerEntry, bool, error) {
	rel := path.Join(d.rel, name)
	for _, layer := range d.layers {
		p := filepath.Join(layer, rel)
		var st unix.Stat_t
		err := unix.Lstat(p, &st)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return lowerEntry{}, false, fmt.Errorf("stat %s: %w", p, err)
		}
		if isWhiteout(&st) {
			return lowerEntry{}, false, nil
		}
		return lowerEntry{path: p, st: st}, true, nil
	}
	return lowerEntry{}, false, nil
}

// child returns the lower directory name inside d. It has no layers when
// the lower has no directory there.
func (d lowerDir) child(name string) (lowerDir, error) {
	out := lowerDir{rel: path.Join(d.rel, name)}
	for _, layer := range d.layers {
		p := filepath.Join(layer, out.rel)
		var st unix.Stat_t
		err := unix.Lstat(p, &st)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return lowerDir{}, fmt.Errorf("stat %s: %w", p, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			break
		}
		out.layers = append(out.layers, layer)
		opaque, err := isOpaque(p)
		if err != nil {
			return lowerDir{}, err
		}
		if opaque {
			break
		}
	}
	return out, nil
}

// names lists the visible entries of d, sorted.
func (d lowerDir) names() ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, layer := range d.layers {
		dir := filepath.Join(layer, d.rel)
		names, err := readDirNames(dir)
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			if seen[name] {
				continue
			}
			seen[name] = true
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(dir, name), &st); err != nil {
				return nil, fmt.Errorf("stat %s: %w", filepath.Join(dir, name), err)
			}
			if !isWhiteout(&st) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// whiteoutMissing makes in dir a whiteout for every entry of lower that
// names (the entries the directory has) lacks, and returns their names.
func whiteoutMissing(dir string, names []string, lower lowerDir) ([]string, error) {
	if len(lower.layers) == 0 {
		return nil, nil
	}
	lowerNames, err := lower.names()
	if err != nil {
		return nil, err
	}
	present := make(map[string]bool, len(names))
	for _, name := range names {
		present[name] = true
	}
	var made []string
	for _, name := range lowerNames {
		if present[name] {
			continue
		}
		p := filepath.Join(dir, name)
		if err := unix.Mknod(p, unix.S_IFCHR, 0); err != nil {
			return nil, whiteoutError(p, err)
		}
		made = append(made, name)
	}
	return made, nil
}

// sameEntry reports whether a and b look the same in a layer: type,
// permission bits, owner, mtime to the nanosecond (not of a directory),
// layer xattrs, and content, link target or device number. The times are
// BuildKit's differ's rule: a directory whose only change is its time is
// not in the layer, and a file rewritten with the same bytes within the
// same second is.
func sameEntry(a string, sa *unix.Stat_t, b string, sb *unix.Stat_t) (bool, error) {
	if sa.Mode != sb.Mode || sa.Uid != sb.Uid || sa.Gid != sb.Gid {
		return false, nil
	}
	if sa.Mode&unix.S_IFMT != unix.S_IFDIR && sa.Mtim != sb.Mtim {
		return false, nil
	}
	switch sa.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if sa.Size != sb.Size {
			return false, nil
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		if sa.Rdev != sb.Rdev {
			return false, nil
		}
	}
	xa, err := layerXattrs(a)
	if err != nil {
		return false, err
	}
	xb, err := layerXattrs(b)
	if err != nil || !slices.Equal(xa, xb) {
		return false, err
	}
	switch sa.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return sameContent(a, b)
	case unix.S_IFLNK:
		ta, err := os.Readlink(a)
		if err != nil {
			return false, fmt.Errorf("read link %s: %w", a, err)
		}
		tb, err := os.Readlink(b)
		if err != nil {
			return false, fmt.Errorf("read link %s: %w", b, err)
		}
		return ta == tb, nil
	}
	return true, nil
}

func sameContent(a, b string) (bool, error) {
	fa, err := os.OpenFile(a, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", a, err)
	}
	defer fa.Close()
	fb, err := os.OpenFile(b, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", b, err)
	}
	defer fb.Close()
	bufA, bufB := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, errA := io.ReadFull(fa, bufA)
		nb, errB := io.ReadFull(fb, bufB)
		if !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		doneA := errors.Is(errA, io.EOF) || errors.Is(errA, io.ErrUnexpectedEOF)
		doneB := errors.Is(errB, io.EOF) || errors.Is(errB, io.ErrUnexpectedEOF)
		if errA != nil && !doneA {
			return false, fmt.Errorf("read %s: %w", a, errA)
		}
		if errB != nil && !doneB {
			return false, fmt.Errorf("read %s: %w", b, errB)
		}
		if doneA || doneB {
			return doneA == doneB, nil
		}
	}
}

// cleanUpper checks and cleans the xattrs of the upper entry p, with one
// listing of them, and returns the names left and whether any was removed.
// It refuses overlay redirect and metacopy xattrs, which make an upper
// directory an incomplete description of the changes (DIFF-02), and
// removes the rest of overlayfs' bookkeeping (origin, impure, nlink...:
// trusted.overlay.*, or user.overlay.* in a user namespace) except the
// opaque flag, so a layer directory says only what its tar says.
func cleanUpper(p string) (left []string, cleaned bool, err error) {
	names, err := listXattrs(p)
	if err != nil {
		return nil, false, err
	}
	for _, name := range names {
		attr := strings.TrimPrefix(strings.TrimPrefix(name, "trusted."), "user.")
		if attr == "overlay.redirect" || attr == "overlay.metacopy" {
			return nil, false, fmt.Errorf("diff %s: has %s xattr: overlay must be mounted with redirect_dir=off,metacopy=off", p, name)
		}
	}
	for _, name := range names {
		overlay := strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
		if !overlay || name == opaqueXattr || name == userOpaque {
			left = append(left, name)
			continue
		}
		if err := unix.Lremovexattr(p, name); err != nil && !errors.Is(err, unix.ENODATA) {
			return nil, false, fmt.Errorf("remove xattr %s of %s: %w", name, p, err)
		}
		cleaned = true
	}
	return left, cleaned, nil
}

// clampTimes sets every mtime below dir that is later than epoch to epoch,
// so the layer directory serializes to the clamped tar every time.
func clampTimes(ctx context.Context, dir string, epoch time.Time) error {
	ts := unix.NsecToTimespec(epoch.Truncate(time.Second).UnixNano())
	return walkTree(ctx, dir, func(p string, st *unix.Stat_t) error {
		if st.Mtim.Sec < ts.Sec || (st.Mtim.Sec == ts.Sec && st.Mtim.Nsec == 0) {
			return nil
		}
		times := []unix.Timespec{st.Atim, ts}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, times, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("clamp mtime of %s: %w", p, err)
		}
		return nil
	})
}

// walkTree calls fn for every entry below dir (not dir itself), children
// before their directory.
func walkTree(ctx context.Context, dir string, fn func(p string, st *unix.Stat_t) error) error {
	return walkDir(ctx, dir, false, fn)
}

// walkLive is walkTree of a directory that other processes change
// meanwhile (the store's): an entry removed before the walk reaches it is
// skipped.
func walkLive(ctx context.Context, dir string, fn func(p string, st *unix.Stat_t) error) error {
	return walkDir(ctx, dir, true, fn)
}

func walkDir(ctx context.Context, dir string, live bool, fn func(p string, st *unix.Stat_t) error) error {
	names, err := readDirNames(dir)
	if live && errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := filepath.Join(dir, name)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if live && errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("stat %s: %w", p, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := walkDir(ctx, p, live, fn); err != nil {
				return err
			}
		}
		if err := fn(p, &st); err != nil {
			return err
		}
	}
	return nil
}

// setTimes restores the atime and mtime of p from st.
func setTimes(p string, st *unix.Stat_t) error {
	times := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, times, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", p, err)
	}
	return nil
}
