package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Copy is a Snapshotter for hosts where overlayfs cannot be mounted: Prepare
// copies the parent chain into a plain directory, and Commit compares it
// with the parent layers to build the upper-format directory the overlay
// snapshotter's commit makes (BuildKit's differ's entries). An active
// snapshot is
//
//	<root>/<id>/snapshot.json  key and parents
//	<root>/<id>/fs             the materialised root, bind mounted
//
// Hardlinks inside a parent layer are materialised as separate files, which
// matches overlayfs: a copy-up breaks such links too.
type Copy struct {
	layers *LayerStore
	root   string
}

// NewCopy returns a copying snapshotter keeping active snapshots in root,
// which must be on the same file system as the LayerStore.
func NewCopy(layers *LayerStore, root string) (*Copy, error) {
	abs, err := openActiveRoot(root)
	if err != nil {
		return nil, err
	}
	return &Copy{layers: layers, root: abs}, nil
}

// Prepare materialises parents into a new writable root.
func (c *Copy) Prepare(ctx context.Context, key string, parents []string, opts ...PrepareOption) ([]Mount, error) {
	return c.prepare(ctx, newActiveMeta(key, parents, false, opts))
}

// View materialises parents into a new root mounted read-only.
func (c *Copy) View(ctx context.Context, key string, parents []string, opts ...PrepareOption) ([]Mount, error) {
	return c.prepare(ctx, newActiveMeta(key, parents, true, opts))
}

func (c *Copy) prepare(ctx context.Context, meta activeMeta) ([]Mount, error) {
	dir, err := createActive(ctx, c.layers, c.root, meta)
	if err != nil {
		return nil, err
	}
	if err := c.materialise(ctx, dir, meta.lowerDirs(c.layers)); err != nil {
		_ = removeAll(context.WithoutCancel(ctx), dir)
		return nil, fmt.Errorf("prepare %s: %w", meta.Key, err)
	}
	mode := "rw"
	if meta.ReadOnly {
		mode = "ro"
	}
	return []Mount{{Type: "bind", Source: filepath.Join(dir, "fs"), Options: []string{"rbind", mode}}}, nil
}

func (c *Copy) materialise(ctx context.Context, dir string, layerDirs []string) error {
	fs := filepath.Join(dir, "fs")
	if err := os.Mkdir(fs, 0o755); err != nil {
		return err
	}
	for _, d := range layerDirs {
		if err := mergeLayerDir(ctx, d, fs); err != nil {
			return fmt.Errorf("apply layer %s: %w", d, err)
		}
	}
	return nil
}

// Commit diffs the materialised root against its parents into an
// upper-format directory and stores it as a layer.
func (c *Copy) Commit(ctx context.Context, key string, opts ...DiffOption) (Layer, error) {
	dir, meta, err := readActive(c.root, key)
	if err != nil {
		return Layer{}, err
	}
	if meta.ReadOnly {
		return Layer{}, fmt.Errorf("commit %s: is a read-only view", key)
	}
	d := &copyDiff{live: filepath.Join(dir, "fs"), upper: filepath.Join(dir, "upper")}
	_ = os.RemoveAll(d.upper) // left by an interrupted Commit
	if err := os.Mkdir(d.upper, 0o755); err != nil {
		return Layer{}, fmt.Errorf("commit %s: %w", key, err)
	}
	lower := rootLowerDir(meta.lowerDirs(c.layers))
	if _, err := d.dir(ctx, "", lower); err != nil {
		return Layer{}, fmt.Errorf("commit %s: %w", key, err)
	}
	return finishCommit(ctx, c.layers, dir, d.upper, opts, nil, nil)
}

// Remove discards the active snapshot key.
func (c *Copy) Remove(ctx context.Context, key string) error {
	return removeActive(ctx, c.root, key)
}

// Close releases nothing: all state is on disk.
func (c *Copy) Close() error { return nil }

// copyDiff writes the changes of the live tree against the lower layers
// into upper, in overlay upper format. Unchanged files are hardlinked from
// the live tree, which Commit deletes afterwards.
type copyDiff struct {
	live, upper string
}

// dir diffs directory rel and reports whether it holds changes.
func (d *copyDiff) dir(ctx context.Context, rel string, lower lowerDir) (bool, error) {
	names, err := readDirNames(filepath.Join(d.live, rel))
	if err != nil {
		return false, err
	}
	kept := false
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		changed, err := d.entry(ctx, path.Join(rel, name), lower)
		if err != nil {
			return false, err
		}
		kept = kept || changed
	}
	made, err := whiteoutMissing(filepath.Join(d.upper, rel), names, lower)
	return kept || len(made) > 0, err
}

// entry diffs the live entry rel against the lower view of its parent.
func (d *copyDiff) entry(ctx context.Context, rel string, parent lowerDir) (bool, error) {
	src := filepath.Join(d.live, rel)
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return false, fmt.Errorf("stat %s: %w", src, err)
	}
	le, found, err := parent.lookup(path.Base(rel))
	if err != nil {
		return false, err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return d.dirEntry(ctx, rel, &st, parent, le, found)
	case unix.S_IFSOCK:
		return false, nil
	}
	if found { // a lower file that only gained a name is unchanged (see pruner.entry)
		same, err := sameEntry(src, &st, le.path, &le.st)
		if err != nil || same {
			return false, err
		}
	}
	dst := filepath.Join(d.upper, rel)
	if err := os.Link(src, dst); err != nil {
		return false, fmt.Errorf("link %s into layer: %w", src, err)
	}
	return true, nil
}

// dirEntry diffs the live directory rel. A directory made again after
// the lower one was removed is diffed against that lower one all the
// same, as BuildKit's differ does: what the lower has and it lacks gets
// a whiteout, what it has unchanged is left out, and it carries no
// opaque marker.
func (d *copyDiff) dirEntry(ctx context.Context, rel string, st *unix.Stat_t, parent lowerDir, le lowerEntry, found bool) (bool, error) {
	src, dst := filepath.Join(d.live, rel), filepath.Join(d.upper, rel)
	lowerIsDir := found && le.st.Mode&unix.S_IFMT == unix.S_IFDIR
	if err := os.Mkdir(dst, 0o700); err != nil {
		return false, fmt.Errorf("make layer directory %s: %w", dst, err)
	}
	var child lowerDir
	if lowerIsDir {
		var err error
		if child, err = parent.child(path.Base(rel)); err != nil {
			return false, err
		}
	}
	childKept, err := d.dir(ctx, rel, child)
	if err != nil {
		return false, err
	}
	changed := childKept || !lowerIsDir
	if !changed {
		same, err := sameEntry(src, st, le.path, &le.st)
		if err != nil {
			return false, err
		}
		changed = !same
	}
	if !changed {
		return false, os.Remove(dst)
	}
	return true, copyMetadata(src, dst, st)
}

// mergeLayerDir applies the upper-format layer directory src onto the
// plain tree dst: whiteouts delete, opaque directories replace, everything
// else is copied with its metadata. Every directory of dst it descends into
// was checked to be a real directory, so no symlink in dst is followed.
func mergeLayerDir(ctx context.Context, src, dst string) error {
	names, err := readDirNames(src)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := mergeEntry(ctx, filepath.Join(src, name), filepath.Join(dst, name)); err != nil {
			return err
		}
	}
	return nil
}

func mergeEntry(ctx context.Context, s, d string) error {
	var st, dst unix.Stat_t
	if err := unix.Lstat(s, &st); err != nil {
		return fmt.Errorf("stat %s: %w", s, err)
	}
	dErr := unix.Lstat(d, &dst)
	if dErr != nil && !errors.Is(dErr, unix.ENOENT) {
		return fmt.Errorf("stat %s: %w", d, dErr)
	}
	exists := dErr == nil
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if exists {
			if err := removeAll(ctx, d); err != nil {
				return err
			}
		}
		if isWhiteout(&st) || st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			return nil
		}
		if err := copyNode(s, d, &st); err != nil {
			return err
		}
		return copyMetadata(s, d, &st)
	}
	opaque, err := isOpaque(s)
	if err != nil {
		return err
	}
	if exists && (dst.Mode&unix.S_IFMT != unix.S_IFDIR || opaque) {
		if err := removeAll(ctx, d); err != nil {
			return err
		}
		exists = false
	}
	if !exists {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("make directory %s: %w", d, err)
		}
	}
	if err := mergeLayerDir(ctx, s, d); err != nil {
		return err
	}
	return copyMetadata(s, d, &st)
}

// copyNode creates d as a copy of the non-directory s.
func copyNode(s, d string, st *unix.Stat_t) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return copyFile(s, d)
	case unix.S_IFLNK:
		target, err := os.Readlink(s)
		if err != nil {
			return fmt.Errorf("read link %s: %w", s, err)
		}
		if err := os.Symlink(target, d); err != nil {
			return fmt.Errorf("make symlink %s: %w", d, err)
		}
		return nil
	default:
		if err := unix.Mknod(d, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("make node %s: %w", d, err)
		}
		return nil
	}
}

func copyFile(s, d string) error {
	in, err := os.OpenFile(s, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", s, err)
	}
	defer in.Close()
	out, err := os.OpenFile(d, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", d, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", s, d, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("close %s: %w", d, err)
	}
	return nil
}

// copyMetadata gives d the owner, xattrs, mode and times of s. The
// mode is set after chown, which clears setuid/setgid bits.
func copyMetadata(s, d string, st *unix.Stat_t) error {
	if err := unix.Lchown(d, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", d, err)
	}
	xattrs, err := snapshotXattrs(s)
	if err != nil {
		return err
	}
	for _, x := range xattrs {
		if err := unix.Lsetxattr(d, x.name, []byte(x.value), 0); err != nil {
			return fmt.Errorf("set xattr %s of %s: %w", x.name, d, err)
		}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Chmod(d, st.Mode&0o7777); err != nil {
			return fmt.Errorf("chmod %s: %w", d, err)
		}
	}
	return setTimes(d, st)
}
