package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/builder-dev/builder/internal/userns"
	"golang.org/x/sys/unix"
)

// Overlay is a Snapshotter backed by overlayfs. An active snapshot is
//
//	<root>/<id>/snapshot.json  key and parents
//	<root>/<id>/upper          the overlay upperdir, which becomes the layer
//	<root>/<id>/work           the overlay workdir
//
// root must be on the same file system as the LayerStore, so Commit can
// rename the upper directory into it.
type Overlay struct {
	layers    *LayerStore
	root      string
	mountOpts []string
}

// NewOverlay returns an overlay snapshotter keeping active snapshots in root.
func NewOverlay(layers *LayerStore, root string) (*Overlay, error) {
	abs, err := openActiveRoot(root)
	if err != nil {
		return nil, err
	}
	return &Overlay{layers: layers, root: abs, mountOpts: overlayMountOptions()}, nil
}

// overlayMountOptions turns off the overlay features that make an upper
// directory unfit to be a layer, for those the kernel knows. In a user
// namespace (a rootless build, Linux 5.11+) overlayfs keeps its metadata
// in user.overlay.* xattrs ("userxattr"), where it never creates
// redirects (redirect_dir=off would be read as "follow" and refused).
func overlayMountOptions() []string {
	var opts []string
	names := []string{"index", "redirect_dir", "metacopy"}
	if userns.InUserNS() {
		opts = append(opts, "userxattr")
		names = []string{"index", "metacopy"}
	}
	for _, name := range names {
		if _, err := os.Stat(filepath.Join("/sys/module/overlay/parameters", name)); err == nil {
			opts = append(opts, name+"=off")
		}
	}
	return opts
}

// activeMeta is the content of snapshot.json.
type activeMeta struct {
	Key      string   `json:"key"`
	Parents  []string `json:"parents"`
	ReadOnly bool     `json:"readOnly,omitempty"`
	// Windows[i]: Parents[i] is in the Windows layer format
	// (WithWindowsLayers).
	Windows []bool `json:"windows,omitempty"`
}

// newActiveMeta is the metadata of the active snapshot key Prepare or
// View makes.
func newActiveMeta(key string, parents []string, readOnly bool, opts []PrepareOption) activeMeta {
	return activeMeta{Key: key, Parents: parents, ReadOnly: readOnly, Windows: prepareOptions(opts).Windows}
}

// lowerDirs are the directories of the active snapshot's parents, bottom
// first.
func (m activeMeta) lowerDirs(layers *LayerStore) []string {
	return layerDirs(layers, m.Parents, m.Windows)
}

// Prepare creates the writable snapshot key over parents.
func (o *Overlay) Prepare(ctx context.Context, key string, parents []string, opts ...PrepareOption) ([]Mount, error) {
	return o.prepare(ctx, newActiveMeta(key, parents, false, opts))
}

// View creates the read-only snapshot key over parents.
func (o *Overlay) View(ctx context.Context, key string, parents []string, opts ...PrepareOption) ([]Mount, error) {
	return o.prepare(ctx, newActiveMeta(key, parents, true, opts))
}

func (o *Overlay) prepare(ctx context.Context, meta activeMeta) ([]Mount, error) {
	dir, err := createActive(ctx, o.layers, o.root, meta)
	if err != nil {
		return nil, err
	}
	for _, sub := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			_ = removeAll(ctx, dir)
			return nil, fmt.Errorf("prepare %s: %w", meta.Key, err)
		}
	}
	return o.mounts(dir, meta), nil
}

func (o *Overlay) mounts(dir string, meta activeMeta) []Mount {
	upper := filepath.Join(dir, "upper")
	lowers := stackDirs(meta.lowerDirs(o.layers))
	switch {
	case len(lowers) == 0 && meta.ReadOnly:
		return []Mount{{Type: "bind", Source: upper, Options: []string{"rbind", "ro"}}}
	case len(lowers) == 0:
		return []Mount{{Type: "bind", Source: upper, Options: []string{"rbind", "rw"}}}
	case len(lowers) == 1 && meta.ReadOnly:
		return []Mount{{Type: "bind", Source: lowers[0], Options: []string{"rbind", "ro"}}}
	}
	opts := []string{"lowerdir=" + strings.Join(lowers, ":")}
	if !meta.ReadOnly {
		opts = append(opts, "upperdir="+upper, "workdir="+filepath.Join(dir, "work"))
	}
	opts = append(opts, o.mountOpts...)
	return []Mount{{Type: "overlay", Source: "overlay", Options: opts}}
}

// Commit turns the upper directory of key into a layer: entries copied up
// but unchanged are dropped, mtimes are clamped if asked, and the directory
// is renamed into the LayerStore. The walk that drops entries also lists
// the ones it keeps, which the commit serializes without listing the
// directory again.
func (o *Overlay) Commit(ctx context.Context, key string, opts ...DiffOption) (Layer, error) {
	dir, meta, err := readActive(o.root, key)
	if err != nil {
		return Layer{}, err
	}
	if meta.ReadOnly {
		return Layer{}, fmt.Errorf("commit %s: is a read-only view", key)
	}
	upper := filepath.Join(dir, "upper")
	// The step's writes start going to disk while the walk below runs on
	// one core (a COPY of 20,000 files: 0.2 s); the commit's own sync
	// then has little left to write.
	early := make(chan error, 1)
	go func() { early <- syncFS(upper) }()
	lower := rootLowerDir(meta.lowerDirs(o.layers))
	pr := pruner{upper: upper, listed: &listing{at: time.Now()}}
	if _, err := pr.dir(ctx, "", lower, false); err != nil {
		return Layer{}, fmt.Errorf("commit %s: %w", key, err)
	}
	return finishCommit(ctx, o.layers, dir, upper, opts, pr.listed, early)
}

// UpperDir returns the upper directory of the active snapshot key.
func (o *Overlay) UpperDir(ctx context.Context, key string) (string, error) {
	dir, meta, err := readActive(o.root, key)
	if err != nil {
		return "", err
	}
	if meta.ReadOnly {
		return "", fmt.Errorf("snapshot %s: is a read-only view", key)
	}
	return filepath.Join(dir, "upper"), nil
}

// Remove discards the active snapshot key.
func (o *Overlay) Remove(ctx context.Context, key string) error {
	return removeActive(ctx, o.root, key)
}

// Close releases nothing: all state is on disk.
func (o *Overlay) Close() error { return nil }

// pruneDir drops from the upper directory rel every entry that overlayfs
// copied up but that is identical to the lower one, and reports whether
// anything is left in it.
func pruneDir(ctx context.Context, upper, rel string, lower lowerDir) (bool, error) {
	pr := pruner{upper: upper}
	return pr.dir(ctx, rel, lower, false)
}

// A pruner drops unchanged copied-up entries from an upper directory and,
// when listed is set, lists the entries it keeps as collectEntries would
// (in the walk's order; listing.sorted orders them).
//
// It also turns every opaque directory into what BuildKit's differ makes
// of it: the directory diffed against the lower one, with a whiteout for
// each lower entry it lacks and no opaque marker, so that the layers are
// BuildKit's entry for entry. A directory that is opaque, or below one,
// did not merge with the lower directory of its path in the live mount
// (hidden); once its marker is gone it does, so the lower entries it
// lacks are whited out in it, and those it has unchanged are dropped.
type pruner struct {
	upper  string
	listed *listing
}

// dir prunes the upper directory rel over lower; hidden says that it did
// not merge with lower in the live mount.
func (pr *pruner) dir(ctx context.Context, rel string, lower lowerDir, hidden bool) (bool, error) {
	dir := filepath.Join(pr.upper, rel)
	var dirSt unix.Stat_t
	if err := unix.Lstat(dir, &dirSt); err != nil {
		return false, fmt.Errorf("stat %s: %w", dir, err)
	}
	names, err := readDirNames(dir)
	if err != nil {
		return false, err
	}
	touched := false // entries made or removed: the directory's times are restored
	if hidden {
		made, err := whiteoutMissing(dir, names, lower)
		if err != nil {
			return false, err
		}
		if len(made) > 0 {
			touched = true
			names = append(names, made...)
		}
	}
	kept := false
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		keep, err := pr.entry(ctx, path.Join(rel, name), lower, hidden)
		if err != nil {
			return false, err
		}
		if keep {
			kept = true
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return false, fmt.Errorf("drop unchanged %s: %w", filepath.Join(dir, name), err)
		}
		touched = true
	}
	if touched {
		return kept, setTimes(dir, &dirSt)
	}
	return kept, nil
}

// entry decides whether the upper entry rel is a change.
func (pr *pruner) entry(ctx context.Context, rel string, parent lowerDir, hidden bool) (bool, error) {
	p := filepath.Join(pr.upper, rel)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return false, fmt.Errorf("stat %s: %w", p, err)
	}
	if isWhiteout(&st) {
		pr.list(rel, p, &st, nil)
		return true, nil
	}
	names, cleaned, err := cleanUpper(p)
	if err != nil {
		return false, err
	}
	if cleaned {
		if err := unix.Lstat(p, &st); err != nil {
			return false, fmt.Errorf("stat %s: %w", p, err)
		}
	}
	name := path.Base(rel)
	le, found, err := parent.lookup(name)
	if err != nil {
		return false, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return pr.dirEntry(ctx, rel, &st, parent, le, found, names, hidden)
	}
	// A lower file that only gained a name (a hardlink made to it) is
	// unchanged, as BuildKit's differ sees it: the layer holds the new
	// name as a file of its own.
	keep := !found
	if !keep {
		same, err := sameEntry(p, &st, le.path, &le.st)
		if err != nil {
			return false, err
		}
		keep = !same
	}
	if keep {
		pr.list(rel, p, &st, names)
	}
	return keep, nil
}

func (pr *pruner) dirEntry(ctx context.Context, rel string, st *unix.Stat_t, parent lowerDir, le lowerEntry, found bool, xattrs []string, hidden bool) (bool, error) {
	p := filepath.Join(pr.upper, rel)
	opaque := false
	if slices.Contains(xattrs, opaqueXattr) || slices.Contains(xattrs, userOpaque) {
		var err error
		if opaque, err = isOpaque(p); err != nil {
			return false, err
		}
		for _, x := range []string{opaqueXattr, userOpaque} {
			if !slices.Contains(xattrs, x) {
				continue // a user namespace may not even read trusted.*
			}
			if err := unix.Lremovexattr(p, x); err != nil && !errors.Is(err, unix.ENODATA) {
				return false, fmt.Errorf("remove xattr %s of %s: %w", x, p, err)
			}
		}
		xattrs = slices.DeleteFunc(xattrs, func(x string) bool { return x == opaqueXattr || x == userOpaque })
	}
	lowerIsDir := found && le.st.Mode&unix.S_IFMT == unix.S_IFDIR
	var child lowerDir
	if lowerIsDir {
		var err error
		if child, err = parent.child(path.Base(rel)); err != nil {
			return false, err
		}
	}
	childKept, err := pr.dir(ctx, rel, child, lowerIsDir && (opaque || hidden))
	if err != nil {
		return false, err
	}
	keep := childKept || !lowerIsDir
	if !keep {
		same, err := sameEntry(p, st, le.path, &le.st)
		if err != nil {
			return false, err
		}
		keep = !same
	}
	if keep && pr.listed != nil {
		// Dropping entries below reset the directory's times and moved
		// its ctime: list it as it is now.
		var now unix.Stat_t
		if err := unix.Lstat(p, &now); err != nil {
			return false, fmt.Errorf("stat %s: %w", p, err)
		}
		pr.listed.add(rel, p, &now, false, xattrs)
	}
	return keep, nil
}

// list adds the kept non-directory entry rel to the listing.
func (pr *pruner) list(rel, p string, st *unix.Stat_t, xattrs []string) {
	if pr.listed != nil {
		pr.listed.add(rel, p, st, false, xattrs)
	}
}

// finishCommit clamps mtimes if asked, moves the upper-format directory
// upper into the layer store, and removes the active snapshot dir.
func finishCommit(ctx context.Context, layers *LayerStore, dir, upper string, opts []DiffOption, listed *listing, early <-chan error) (Layer, error) {
	var o DiffOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.SourceDateEpoch != nil {
		if err := clampTimes(ctx, upper, *o.SourceDateEpoch); err != nil {
			return Layer{}, err
		}
		listed = nil // the clamp changed the times listed
	}
	var windows *time.Time
	if o.Windows {
		// Dated now, as BuildKit's Windows differ dates them; no later
		// than SOURCE_DATE_EPOCH, as every time in the layer.
		t := time.Now().UTC()
		if o.SourceDateEpoch != nil && o.SourceDateEpoch.Before(t) {
			t = *o.SourceDateEpoch
		}
		windows = &t
	}
	layer, err := layers.commitDir(ctx, upper, listed, windows, early)
	if err != nil {
		return Layer{}, err
	}
	if err := removeAll(context.WithoutCancel(ctx), dir); err != nil {
		return Layer{}, fmt.Errorf("remove committed snapshot %s: %w", dir, err)
	}
	return layer, nil
}

// stackDirs orders layer directories (bottom first) as an overlay lowerdir
// list wants them, top first, keeping only the topmost occurrence of a
// layer that appears more than once (two steps with the same diff, such as
// two RUNs that change nothing). Overlayfs refuses a stack that names one
// directory twice (ELOOP); the topmost copy already decides every path that
// layer holds, so the stack it leaves shows the same tree.
func stackDirs(dirs []string) []string {
	seen := make(map[string]bool, len(dirs))
	top := make([]string, 0, len(dirs))
	for i := len(dirs) - 1; i >= 0; i-- {
		if seen[dirs[i]] {
			continue
		}
		seen[dirs[i]] = true
		top = append(top, dirs[i])
	}
	return top
}

// layerDirs are the directories of the layers parents (bottom first): of
// those in the Windows layer format (windows[i]), their Files directories,
// those that have one.
func layerDirs(layers *LayerStore, parents []string, windows []bool) []string {
	dirs := make([]string, 0, len(parents))
	for i, p := range parents {
		if i >= len(windows) || !windows[i] {
			dirs = append(dirs, layers.Dir(p))
			continue
		}
		d := layers.FilesDir(p)
		if fi, err := os.Lstat(d); err == nil && fi.IsDir() {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

func openActiveRoot(root string) (string, error) {
	if strings.ContainsAny(root, ":,") {
		return "", fmt.Errorf("open snapshotter %s: path must not contain ':' or ','", root)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("open snapshotter %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", fmt.Errorf("open snapshotter %s: %w", abs, err)
	}
	return abs, nil
}

// activeID names the directory of an active key: keys may hold any bytes.
func activeID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:12])
}

// createActive makes the directory of a new active snapshot; mkdir is the
// lock that makes a second Prepare of key fail with ErrExists.
func createActive(ctx context.Context, layers *LayerStore, root string, meta activeMeta) (string, error) {
	for _, p := range meta.Parents {
		if err := layers.Ensure(ctx, p); err != nil {
			return "", fmt.Errorf("prepare %s: parent layer %s: %w", meta.Key, p, err)
		}
	}
	dir := filepath.Join(root, activeID(meta.Key))
	if err := os.Mkdir(dir, 0o700); errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("prepare %s: %w", meta.Key, ErrExists)
	} else if err != nil {
		return "", fmt.Errorf("prepare %s: %w", meta.Key, err)
	}
	data, err := json.Marshal(meta)
	if err == nil {
		err = writeFileSync(filepath.Join(dir, "snapshot.json"), data)
	}
	if err != nil {
		_ = removeAll(ctx, dir)
		return "", fmt.Errorf("prepare %s: %w", meta.Key, err)
	}
	return dir, nil
}

func readActive(root, key string) (string, activeMeta, error) {
	dir := filepath.Join(root, activeID(key))
	data, err := os.ReadFile(filepath.Join(dir, "snapshot.json"))
	if errors.Is(err, os.ErrNotExist) {
		return "", activeMeta{}, fmt.Errorf("snapshot %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return "", activeMeta{}, fmt.Errorf("read snapshot %s: %w", key, err)
	}
	var meta activeMeta
	if err := json.Unmarshal(data, &meta); err != nil {
		return "", activeMeta{}, fmt.Errorf("read snapshot %s: %s: %w", key, dir, err)
	}
	if meta.Key != key {
		return "", activeMeta{}, fmt.Errorf("read snapshot %s: %s belongs to %q", key, dir, meta.Key)
	}
	return dir, meta, nil
}

// removeActive renames the snapshot directory away (so the key is free at
// once) and deletes it.
func removeActive(ctx context.Context, root, key string) error {
	dir, _, err := readActive(root, key)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(root, ".rm-")
	if err != nil {
		return fmt.Errorf("remove snapshot %s: %w", key, err)
	}
	if err := os.Rename(dir, filepath.Join(tmp, "s")); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("remove snapshot %s: %w", key, err)
	}
	if err := removeAll(context.WithoutCancel(ctx), tmp); err != nil {
		return fmt.Errorf("remove snapshot %s: %w", key, err)
	}
	return nil
}
