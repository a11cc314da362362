package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotReproducible is returned by WriteTar for a layer that entered the
// store by Unpack: its directory does not serialize to the original blob,
// so the caller must use the blob it kept.
var ErrNotReproducible = errors.New("snapshot: layer tar is not reproducible from its directory")

// ErrModified is matched (errors.Is) by the error of WriteTar for a
// committed layer whose directory was changed after the commit: it no
// longer serializes to its diffID. errors.As with *ModifiedError gives the
// layer.
var ErrModified = errors.New("snapshot: layer modified on disk")

// ModifiedError says that the directory of layer DiffID serializes to Got.
type ModifiedError struct {
	DiffID, Dir, Got string
}

func (e *ModifiedError) Error() string {
	if e.Got == "" {
		return fmt.Sprintf("directory %s differs from the layer it was unpacked from (modified on disk)", e.Dir)
	}
	return fmt.Sprintf("directory %s serializes to %s (modified on disk)", e.Dir, e.Got)
}

// Is makes errors.Is(err, ErrModified) true.
func (e *ModifiedError) Is(target error) bool { return target == ErrModified }

const (
	layerFS   = "fs"
	layerMeta = "layer.json"
)

// LayerStore holds committed layers, one directory per diffID:
//
//	<root>/<hex>/fs          the layer in overlay upper format (a lowerdir)
//	<root>/<hex>/layer.json  size of the layer tar and how the layer was made
//
// fs holds the entries of the layer's tar as they are named there: a layer
// in the Windows layer format has the image's files in fs/Files
// (windows.go).
//
// A layer directory appears by an atomic rename of a complete temporary
// directory, so a present layer is always whole.
type LayerStore struct {
	root string
	// scratch returns the directory for temporary layer directories
	// (unpacks, commits, removals in progress); root when nil.
	scratch func() (string, error)
	// fetcher, if set, brings a missing parent layer into the store when
	// a snapshot over it is prepared (SetFetcher).
	fetcher Fetcher
}

// Fetcher brings the layer diffID, which the store lacks, into it: a layer
// known to be in a remote cache, fetched only when a snapshot needs it.
type Fetcher func(ctx context.Context, diffID string) error

// SetFetcher makes Prepare and View of a snapshot whose parent layer is
// missing call f for it first. Set it before the store is used.
func (s *LayerStore) SetFetcher(f Fetcher) { s.fetcher = f }

// Fetcher is the fetcher SetFetcher set, or nil.
func (s *LayerStore) Fetcher() Fetcher { return s.fetcher }

// Ensure makes sure the layer diffID is in the store, fetching it if a
// fetcher is set.
func (s *LayerStore) Ensure(ctx context.Context, diffID string) error {
	if s.Has(diffID) {
		return nil
	}
	if s.fetcher == nil {
		return ErrNotFound
	}
	if err := s.fetcher(ctx, diffID); err != nil {
		return err
	}
	if !s.Has(diffID) {
		return ErrNotFound
	}
	return nil
}

// LayerStoreOption configures OpenLayerStore.
type LayerStoreOption func(*LayerStore)

// WithScratch makes the store keep its temporary directories in the
// directory dir returns (on root's file system: they are renamed into
// root), such as a scratch directory its owner's death releases, instead of
// root itself, where a killed process would leave them.
func WithScratch(dir func() (string, error)) LayerStoreOption {
	return func(s *LayerStore) { s.scratch = dir }
}

// tempDir makes a temporary directory named after purpose.
func (s *LayerStore) tempDir(purpose string) (string, error) {
	dir := s.root
	if s.scratch != nil {
		d, err := s.scratch()
		if err != nil {
			return "", err
		}
		dir = d
	}
	return os.MkdirTemp(dir, "."+purpose+"-")
}

// layerMetadata is the content of layer.json.
type layerMetadata struct {
	DiffID string `json:"diffID"`
	Size   int64  `json:"size"`
	// Committed layers serialize to exactly the tar hashed as DiffID.
	Committed bool `json:"committed"`
	// StatDigest is the stat digest (statdigest.go) of the directory
	// when its content was hashed as DiffID; "" when unknown.
	StatDigest string `json:"statDigest,omitempty"`
	// Xattrs names the xattrs the layer's tar holds: layerXattrsRule
	// (security.capability alone, as BuildKit's layers). Layers committed
	// before it was recorded ("") hold user.* ones too and serialize so.
	Xattrs string `json:"xattrs,omitempty"`
	// Windows, on a committed layer in the Windows layer format
	// (windows.go), is the time of its tar's Hives and Files entries;
	// the layer's files are in fs/Files.
	Windows *time.Time `json:"windows,omitempty"`
	// Order is the order of the tar's entries: layerOrderWalk (walkKey,
	// BuildKit's); layers committed before it was recorded ("") list
	// them by path (sortPathOrder) and serialize so.
	Order string `json:"order,omitempty"`
}

// layerOrderWalk is layerMetadata.Order of a layer whose tar lists its
// entries in walkKey order.
const layerOrderWalk = "walk"

// layerXattrsRule is layerMetadata.Xattrs of a layer whose tar holds the
// xattrs keepXattr keeps.
const layerXattrsRule = "security.capability"

// format is how the layer's tar is written.
func (m layerMetadata) format() tarFormat {
	f := tarFormat{keep: snapshotXattr, windows: m.Windows}
	if m.Xattrs == layerXattrsRule {
		f.keep = keepXattr
	}
	return f
}

// filesDir is the directory whose entries the committed layer's tar
// holds.
func (m layerMetadata) filesDir(layerDir string) string {
	if m.Windows != nil {
		return filepath.Join(layerDir, windowsFiles)
	}
	return layerDir
}

// OpenLayerStore opens (creating it if needed) the layer store at root.
func OpenLayerStore(root string, opts ...LayerStoreOption) (*LayerStore, error) {
	if strings.ContainsAny(root, ":,") {
		return nil, fmt.Errorf("open layer store %s: path must not contain ':' or ','", root)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open layer store %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("open layer store %s: %w", abs, err)
	}
	// Tighten the mode only when needed: a store on a read-only file
	// system must still open for reading.
	if fi, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("open layer store %s: %w", abs, err)
	} else if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(abs, 0o700); err != nil {
			return nil, fmt.Errorf("open layer store %s: %w", abs, err)
		}
	}
	s := &LayerStore{root: abs}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Root is the directory of the store.
func (s *LayerStore) Root() string { return s.root }

// Has reports whether the layer diffID is in the store: its directory has
// a layer.json that decodes and names it. A layer whose layer.json is
// damaged or gone is absent: a build makes or unpacks it again, replacing
// the directory (see install).
func (s *LayerStore) Has(diffID string) bool {
	_, err := s.metadata(diffID)
	return err == nil
}

// Dir is the directory holding the layer diffID, usable as an overlay
// lowerdir. It does not check that the layer exists.
func (s *LayerStore) Dir(diffID string) string {
	hex, err := digestHex(diffID)
	if err != nil {
		return filepath.Join(s.root, "invalid")
	}
	return filepath.Join(s.root, hex, layerFS)
}

// Size is the size in bytes of the uncompressed tar of the layer diffID.
func (s *LayerStore) Size(diffID string) (int64, error) {
	meta, err := s.metadata(diffID)
	if err != nil {
		return 0, err
	}
	return meta.Size, nil
}

// List returns the diffIDs of all layers in the store, sorted.
func (s *LayerStore) List(ctx context.Context) ([]string, error) {
	names, err := readDirNames(s.root)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		diffID := "sha256:" + name
		if _, err := digestHex(diffID); err == nil && s.Has(diffID) {
			out = append(out, diffID)
		}
	}
	return out, nil
}

// Remove deletes the layer diffID. The layer disappears atomically; removing
// a missing layer returns ErrNotFound.
func (s *LayerStore) Remove(ctx context.Context, diffID string) error {
	hex, err := digestHex(diffID)
	if err != nil {
		return err
	}
	tmp, err := s.tempDir("rm")
	if err != nil {
		return fmt.Errorf("remove layer %s: %w", diffID, err)
	}
	defer os.RemoveAll(tmp)
	err = os.Rename(filepath.Join(s.root, hex), filepath.Join(tmp, hex))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove layer %s: %w", diffID, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("remove layer %s: %w", diffID, err)
	}
	if err := removeAll(ctx, tmp); err != nil {
		return fmt.Errorf("remove layer %s: %w", diffID, err)
	}
	return nil
}

// DiskUsage returns the bytes of disk the store uses, counting each inode
// once.
func (s *LayerStore) DiskUsage(ctx context.Context) (int64, error) {
	seen := map[uint64]bool{}
	var total int64
	err := walkLive(ctx, s.root, func(p string, st *unix.Stat_t) error {
		if seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		total += st.Blocks * 512
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("disk usage of %s: %w", s.root, err)
	}
	return total, nil
}

// Unpack stores the uncompressed layer tar read from r as layer diffID. The
// stream's sha256 must equal diffID. A layer already present is left as is;
// two processes unpacking the same layer both succeed.
func (s *LayerStore) Unpack(ctx context.Context, diffID string, r io.Reader) (Layer, error) {
	hexID, err := digestHex(diffID)
	if err != nil {
		return Layer{}, err
	}
	if s.Has(diffID) {
		return s.layer(diffID)
	}
	tmp, err := s.tempDir("unpack")
	if err != nil {
		return Layer{}, fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	defer removeAll(context.WithoutCancel(ctx), tmp)
	h := sha256.New()
	cr := &countingReader{r: io.TeeReader(r, h)}
	fs := filepath.Join(tmp, layerFS)
	if err := os.Mkdir(fs, 0o755); err != nil {
		return Layer{}, fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	if _, err := Apply(ctx, fs, cr, WithOverlayWhiteouts()); err != nil {
		return Layer{}, fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return Layer{}, fmt.Errorf("unpack layer %s: read: %w", diffID, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != hexID {
		return Layer{}, fmt.Errorf("unpack layer %s: content has digest sha256:%s", diffID, got)
	}
	if err := syncFS(fs); err != nil {
		return Layer{}, fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	meta := layerMetadata{DiffID: diffID, Size: cr.n}
	if err := s.install(ctx, tmp, hexID, meta); err != nil {
		return Layer{}, fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	return Layer{DiffID: diffID, Size: cr.n}, nil
}

// commitDir serializes the upper-format directory dir, hashes it once (the
// diffID), and moves it into the store as a committed layer. If the layer
// exists already, dir is discarded. dir must be on the store's file system.
//
// The content is made durable by one syncfs of the store's file system,
// run while the tar is hashed (the hash reads the page cache, the sync
// writes it back), instead of an fsync per file: on a layer of thousands
// of files that is several times faster, and as safe — the rename that
// publishes the layer comes after both. early, when set, is the result of
// a sync the caller started before it walked dir; its error counts too.
//
// With windows set the layer is written in the Windows layer format
// (windows.go), its Hives and Files entries dated *windows.
func (s *LayerStore) commitDir(ctx context.Context, dir string, listed *listing, windows *time.Time, early <-chan error) (Layer, error) {
	synced := make(chan error, 1)
	go func() { synced <- syncFS(dir) }()
	h := sha256.New()
	statAt, entries, err := collectSettled(ctx, dir, listed)
	var size int64
	if err == nil {
		size, err = writeEntriesTar(ctx, dir, entries, h, tarFormat{keep: keepXattr, windows: windows})
	}
	serr := <-synced
	if early != nil {
		// syncfs reports the write errors since its file was opened: one
		// met by the early sync may predate this one's.
		serr = errors.Join(<-early, serr)
	}
	if err != nil {
		return Layer{}, fmt.Errorf("commit %s: %w", dir, err)
	}
	diffID := "sha256:" + hex.EncodeToString(h.Sum(nil))
	layer := Layer{DiffID: diffID, Size: size}
	if s.Has(diffID) {
		// An unpacked Windows layer of this diffID has the files this
		// one would have, where it would have them; adopting it would
		// need its leading entries' time.
		if windows == nil {
			if err := s.adopt(ctx, diffID); err != nil {
				return Layer{}, fmt.Errorf("commit %s: %w", dir, err)
			}
		}
		return layer, removeAll(context.WithoutCancel(ctx), dir)
	}
	if serr != nil {
		return Layer{}, fmt.Errorf("commit %s: %w", dir, serr)
	}
	tmp, err := s.tempDir("commit")
	if err != nil {
		return Layer{}, fmt.Errorf("commit %s: %w", dir, err)
	}
	defer removeAll(context.WithoutCancel(ctx), tmp)
	meta := layerMetadata{DiffID: diffID, Size: size, Committed: true, Xattrs: layerXattrsRule, Windows: windows, Order: layerOrderWalk}
	fs := filepath.Join(tmp, layerFS)
	if windows != nil {
		if err := windowsLayout(fs); err != nil {
			return Layer{}, fmt.Errorf("commit %s: %w", dir, err)
		}
	}
	if err := os.Rename(dir, meta.filesDir(fs)); err != nil {
		return Layer{}, fmt.Errorf("commit %s: move into layer store (must be one file system): %w", dir, err)
	}
	if windows != nil {
		if err := syncDir(fs); err != nil {
			return Layer{}, fmt.Errorf("commit %s: %w", dir, err)
		}
	}
	// The rename keeps every entry's stat: the directory itself is no
	// entry of its tar.
	meta.StatDigest = statDigest(entries, statAt)
	if err := s.install(ctx, tmp, diffID[len("sha256:"):], meta); err != nil {
		return Layer{}, fmt.Errorf("commit %s: %w", dir, err)
	}
	return layer, nil
}

// collectSettled is collectEntries of dir (or the listing a walk of it
// already made, when listed is not nil), with the entries changed just
// before (a RUN's files, a COPY's) stat'ed again once they are out of the
// racy window, so that the commit can record the layer's stat digest: a
// wait of at most statRacyWindow, beside the commit's syncfs. An entry
// that was already outside the window keeps its first stat (a change since
// moves its ctime, and the digest then never matches); when a racy entry's
// second stat differs, the whole directory is listed again.
func collectSettled(ctx context.Context, dir string, listed *listing) (time.Time, []tarEntry, error) {
	statAt := time.Now()
	var entries []tarEntry
	var err error
	if listed != nil {
		statAt, entries = listed.at, listed.sorted()
	} else if entries, err = collectEntries(ctx, dir); err != nil {
		return statAt, nil, err
	}
	wait := racyWait(entries, statAt)
	if wait == 0 {
		return statAt, entries, nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return statAt, nil, ctx.Err()
	}
	first := statAt
	statAt = time.Now()
	if restatRacy(entries, first) {
		return statAt, entries, nil
	}
	entries, err = collectEntries(ctx, dir)
	return statAt, entries, err
}

// restatRacy stats again every entry that was within its racy window of
// statAt and reports whether all of them are unchanged.
func restatRacy(entries []tarEntry, statAt time.Time) bool {
	for i := range entries {
		e := &entries[i]
		if e.kind == kindOpaque || e.st.Ctim.Nano() < racyLimit(&e.st, statAt) {
			continue
		}
		var st unix.Stat_t
		if e.src == "" || unix.Lstat(e.src, &st) != nil || !sameStat(&st, &e.st) {
			return false
		}
	}
	return true
}

// adopt makes the existing layer diffID, which a commit just produced
// again, serve as a committed one: a layer unpacked from an image (a
// COPY --from=IMAGE / / can reproduce the image's layer) is marked
// committed when its directory serializes to diffID, so that WriteTar can
// write it without the image's blob. One that does not serialize so stays
// unpacked (WriteTar's caller then needs the blob it kept).
func (s *LayerStore) adopt(ctx context.Context, diffID string) error {
	meta, err := s.metadata(diffID)
	if err != nil || meta.Committed {
		return nil // removed meanwhile, or nothing to do
	}
	h := sha256.New()
	if _, err := writeLayerTar(ctx, s.Dir(diffID), h); err != nil {
		return fmt.Errorf("adopt layer %s: %w", diffID, err)
	}
	if "sha256:"+hex.EncodeToString(h.Sum(nil)) != diffID {
		return nil
	}
	meta.Committed, meta.Xattrs = true, layerXattrsRule
	data, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.root, diffID[len("sha256:"):])
	tmp := filepath.Join(dir, layerMeta+".adopt")
	os.Remove(tmp)
	if err := writeFileSync(tmp, data); err != nil {
		return fmt.Errorf("adopt layer %s: %w", diffID, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, layerMeta)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("adopt layer %s: %w", diffID, err)
	}
	return syncDir(dir)
}

// install writes the metadata into the complete temporary layer directory
// tmp, whose content the caller made durable (syncFS), syncs the metadata
// and tmp's entries, and renames tmp to its final name. Losing a race to
// another process that installed the same layer is success.
func (s *LayerStore) install(ctx context.Context, tmp, hexID string, meta layerMetadata) error {
	data, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	if err := writeFileSync(filepath.Join(tmp, layerMeta), data); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	final := filepath.Join(s.root, hexID)
	err = os.Rename(tmp, final)
	if err != nil && s.Has(meta.DiffID) {
		return nil
	}
	if err != nil && (errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY)) {
		// A directory without a valid layer.json (a layer only ever
		// appears whole, by this rename, so it is damaged, not in
		// progress): replace it.
		if rerr := s.Remove(ctx, meta.DiffID); rerr != nil && !errors.Is(rerr, ErrNotFound) {
			return fmt.Errorf("install layer %s: replace the damaged directory: %w", final, rerr)
		}
		err = os.Rename(tmp, final)
		if err != nil && s.Has(meta.DiffID) {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("install layer %s: %w", final, err)
	}
	return syncDir(s.root)
}

// WriteTar writes the tar of the committed layer diffID to w and returns its
// size. If the directory no longer serializes to diffID the result is an
// error wrapping a *ModifiedError (and w got a bad tar). A directory whose
// entries stat as they did when its content was hashed (its stat digest,
// statdigest.go) is written without hashing it again; any other is hashed
// on the way: a w that is a FileRangeWriter gets the contents of the
// larger files as file ranges, hashed by a second read from the page
// cache on another goroutine.
func (s *LayerStore) WriteTar(ctx context.Context, diffID string, w io.Writer) (int64, error) {
	return s.writeTar(ctx, diffID, w, true)
}

// writeTar is WriteTar; with trustStat false the content is hashed even
// when the stat digest is unchanged, and no stat digest is recorded
// (Verify, which changes nothing).
func (s *LayerStore) writeTar(ctx context.Context, diffID string, w io.Writer, trustStat bool) (int64, error) {
	meta, err := s.metadata(diffID)
	if err != nil {
		return 0, err
	}
	if !meta.Committed {
		return 0, fmt.Errorf("write tar of layer %s: %w", diffID, ErrNotReproducible)
	}
	dir := meta.filesDir(s.Dir(diffID))
	statAt := time.Now()
	entries, err := collectEntries(ctx, dir)
	if err != nil {
		return 0, fmt.Errorf("write tar of layer %s: %w", diffID, err)
	}
	if meta.Order != layerOrderWalk {
		sortPathOrder(entries)
	}
	stat := statDigest(entries, statAt)
	if trustStat && meta.StatDigest != "" && stat == meta.StatDigest {
		n, err := writeEntriesTar(ctx, dir, entries, w, meta.format())
		if err != nil {
			return n, fmt.Errorf("write tar of layer %s: %w", diffID, err)
		}
		return n, nil
	}
	var n int64
	var got string
	if fr, ok := w.(FileRangeWriter); ok {
		hw := newHashingRangeWriter(fr)
		n, err = writeEntriesTar(ctx, dir, entries, hw, meta.format())
		var herr error
		got, herr = hw.sum()
		if err == nil {
			err = herr
		}
	} else {
		h := sha256.New()
		n, err = writeEntriesTar(ctx, dir, entries, io.MultiWriter(w, h), meta.format())
		got = "sha256:" + hex.EncodeToString(h.Sum(nil))
	}
	if err != nil {
		return n, fmt.Errorf("write tar of layer %s: %w", diffID, err)
	}
	if got != diffID {
		return n, fmt.Errorf("write tar of layer %s: %w", diffID, &ModifiedError{DiffID: diffID, Dir: dir, Got: got})
	}
	if trustStat && stat != "" && stat != meta.StatDigest {
		// Hashed and found unchanged (a layer committed within the
		// racy window, or moved): the next write trusts this stat. A
		// failure to record it costs only that next write a hash.
		// Verify changes nothing.
		meta.StatDigest = stat
		_ = s.writeMetadata(diffID, meta)
	}
	return n, nil
}

// writeMetadata replaces the layer.json of the installed layer diffID.
func (s *LayerStore) writeMetadata(diffID string, meta layerMetadata) error {
	data, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.root, diffID[len("sha256:"):])
	// A name of its own: another process may update it at the same time.
	tmp := filepath.Join(dir, fmt.Sprintf("%s.update-%d-%d", layerMeta, os.Getpid(), time.Now().UnixNano()))
	if err := writeFileSync(tmp, data); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("update layer %s: %w", diffID, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, layerMeta)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("update layer %s: %w", diffID, err)
	}
	return syncDir(dir)
}

func (s *LayerStore) layer(diffID string) (Layer, error) {
	meta, err := s.metadata(diffID)
	if err != nil {
		return Layer{}, err
	}
	return Layer{DiffID: diffID, Size: meta.Size}, nil
}

func (s *LayerStore) metadata(diffID string) (layerMetadata, error) {
	hexID, err := digestHex(diffID)
	if err != nil {
		return layerMetadata{}, err
	}
	p := filepath.Join(s.root, hexID, layerMeta)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return layerMetadata{}, fmt.Errorf("layer %s: %w", diffID, ErrNotFound)
	}
	if err != nil {
		return layerMetadata{}, fmt.Errorf("read layer metadata %s: %w", p, err)
	}
	// Strictly: a damaged key (a flipped byte in "committed") must not
	// read as a field left out.
	var meta layerMetadata
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&meta); err != nil {
		return layerMetadata{}, fmt.Errorf("read layer metadata %s: %w", p, err)
	}
	if meta.DiffID != diffID {
		return layerMetadata{}, fmt.Errorf("read layer metadata %s: records %s", p, meta.DiffID)
	}
	if meta.StatDigest != "" {
		if _, err := digestHex(meta.StatDigest); err != nil {
			return layerMetadata{}, fmt.Errorf("read layer metadata %s: damaged stat digest", p)
		}
	}
	return meta, nil
}

// digestHex validates a "sha256:<64 hex>" diffID and returns the hex part.
func digestHex(diffID string) (string, error) {
	h, ok := strings.CutPrefix(diffID, "sha256:")
	if !ok || len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return "", fmt.Errorf("invalid layer diffID %q: want sha256:<64 lower-case hex digits>", diffID)
	}
	return h, nil
}

func writeFileSync(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", p, err)
	}
	return f.Close()
}

// syncFS makes every write to the file system holding dir durable with
// one syncfs(2): the cost is that of the data not yet written back, with no
// system call per file, where an fsync per file of a layer of thousands of
// small files costs seconds. syncfs reports a write-back error that
// happened on the file system since it was mounted and that no earlier
// syncfs reported, like an fsync of each file would.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync file system of %s: %w", dir, err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sync file system of %s: %w", dir, err)
	}
	return nil
}

func syncDir(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", p, err)
	}
	return nil
}

// removeAll removes p, first making directories writable so a tree with
// 0500 directories can go too.
func removeAll(ctx context.Context, p string) error {
	err := os.RemoveAll(p)
	if err == nil || ctx.Err() != nil {
		return err
	}
	_ = walkTree(ctx, p, func(q string, st *unix.Stat_t) error {
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			_ = os.Chmod(q, 0o700)
		}
		return nil
	})
	_ = os.Chmod(p, 0o700)
	return os.RemoveAll(p)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// ErrBadMetadata is matched by the error of Verify for a layer directory
// whose layer.json is missing, does not decode or names another layer.
var ErrBadMetadata = errors.New("snapshot: layer.json missing or damaged")

// ErrBadSource is matched by the error of Verify when the tar given to
// check an unpacked layer against does not have the layer's diffID.
var ErrBadSource = errors.New("snapshot: source tar does not match the layer")

// Entries lists the directory names of the store: dirs are those named
// like a layer (64 hex digits; the layer may be damaged, see Verify), stray
// are the others (not temporaries: they live in the scratch directory).
func (s *LayerStore) Entries() (dirs, stray []string, err error) {
	names, err := readDirNames(s.root)
	if err != nil {
		return nil, nil, fmt.Errorf("list layer store %s: %w", s.root, err)
	}
	for _, n := range names {
		if _, err := digestHex("sha256:" + n); err == nil {
			dirs = append(dirs, "sha256:"+n)
		} else if !strings.HasPrefix(n, ".") {
			stray = append(stray, n)
		}
	}
	return dirs, stray, nil
}

// Committed reports whether the layer diffID was committed here, so its
// directory reproduces its tar (WriteTar), rather than unpacked.
func (s *LayerStore) Committed(diffID string) bool {
	meta, err := s.metadata(diffID)
	return err == nil && meta.Committed
}

// Verify checks the layer diffID on disk without changing it: its
// layer.json (an error wrapping ErrBadMetadata), then its content. A
// committed layer must serialize to diffID (else a *ModifiedError); an
// unpacked layer must equal what unpacking src gives (src, the layer's
// uncompressed tar, is checked against diffID first: ErrBadSource). With
// a nil src an unpacked layer's content is not checked, and checked is
// false.
func (s *LayerStore) Verify(ctx context.Context, diffID string, src io.Reader) (checked bool, err error) {
	meta, err := s.metadata(diffID)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrBadMetadata, err)
	}
	if fi, err := os.Lstat(s.Dir(diffID)); err != nil || !fi.IsDir() {
		return false, fmt.Errorf("%w: %s is not a directory", ErrBadMetadata, s.Dir(diffID))
	}
	if meta.Committed {
		_, err := s.writeTar(ctx, diffID, io.Discard, false)
		return true, err
	}
	if src == nil {
		return false, nil
	}
	tmp, err := s.tempDir("verify")
	if err != nil {
		return false, fmt.Errorf("verify layer %s: %w", diffID, err)
	}
	defer removeAll(context.WithoutCancel(ctx), tmp)
	fs := filepath.Join(tmp, layerFS)
	if err := os.Mkdir(fs, 0o755); err != nil {
		return false, fmt.Errorf("verify layer %s: %w", diffID, err)
	}
	h := sha256.New()
	tr := io.TeeReader(src, h)
	if _, err := Apply(ctx, fs, tr, WithOverlayWhiteouts()); err != nil {
		return false, fmt.Errorf("verify layer %s: %w: %w", diffID, ErrBadSource, err)
	}
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return false, fmt.Errorf("verify layer %s: read source: %w", diffID, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID {
		return false, fmt.Errorf("verify layer %s: %w (it has digest %s)", diffID, ErrBadSource, got)
	}
	want, err := treeDigest(ctx, fs)
	if err != nil {
		return false, fmt.Errorf("verify layer %s: %w", diffID, err)
	}
	got, err := treeDigest(ctx, s.Dir(diffID))
	if err != nil {
		return true, fmt.Errorf("verify layer %s: %w", diffID, err)
	}
	if got != want {
		return true, fmt.Errorf("verify layer %s: %w", diffID, &ModifiedError{DiffID: diffID, Dir: s.Dir(diffID)})
	}
	return true, nil
}

// treeDigest hashes the layer tar that dir serializes to, without the
// times of directories: a directory a tar does not list (its parent of an
// entry) gets the time it was unpacked at.
func treeDigest(ctx context.Context, dir string) (string, error) {
	pr, pw := io.Pipe()
	go func() {
		_, err := writeLayerTar(ctx, dir, pw)
		pw.CloseWithError(err)
	}()
	defer pr.Close()
	h := sha256.New()
	tr := tar.NewReader(pr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			return "", err
		}
		if hdr.Typeflag == tar.TypeDir {
			hdr.ModTime = time.Time{}
		}
		fmt.Fprintf(h, "%q %c %o %d %d %d %q %d %v\n", hdr.Name, hdr.Typeflag, hdr.Mode, hdr.Uid, hdr.Gid, hdr.Size, hdr.Linkname, hdr.ModTime.Unix(), hdr.PAXRecords)
		if _, err := io.Copy(h, tr); err != nil {
			return "", err
		}
	}
}
