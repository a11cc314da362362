package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Area is a directory of the store root that the store hands to other
// packages. The cache is the only package that names the directories of a
// root; the others ask it with Dir or NewScratch.
type Area string

const (
	// Snapshots holds the unpacked layers (snapshot.LayerStore).
	Snapshots Area = "snapshots"
	// Active holds the snapshots of running steps, one scratch directory
	// per build (NewScratch).
	Active Area = "active"
	// RunCache holds RUN --mount=type=cache directories and their locks.
	RunCache Area = "runcache"
	// Compressed maps diffIDs to the compressed blobs made of them.
	Compressed Area = "compressed"
	// URLs holds, per ADD <url>, the validators of its last download
	// (ETag, content digest, Last-Modified) for revalidating it.
	URLs Area = "urls"
	// Sources maps blob digests to the registry repositories known to
	// hold them (pulled from, pushed to), so a push to another repository
	// of the same registry mounts a blob instead of uploading it.
	Sources Area = "sources"
	// Attestations maps an image's manifest digest to the index that
	// holds it and its attestation manifest: <hex>, the index digest.
	Attestations Area = "attestations"
	// Temp holds per-process scratch: files being written, mount points,
	// downloads, sandboxes.
	Temp Area = "tmp"
)

// scratchAreas are the areas whose entries are scratch directories: each
// lives as long as the flock its owner holds on it.
var scratchAreas = []Area{Temp, Active}

// Dir returns the absolute path of area, creating it (0700) if needed.
func (s *Store) Dir(a Area) (string, error) {
	dir := filepath.Join(s.root, string(a))
	if err := makePrivateDir(dir); err != nil {
		return "", fmt.Errorf("store area %s: %w", dir, err)
	}
	return dir, nil
}

// AreaPath returns the absolute path of area without creating it.
func (s *Store) AreaPath(a Area) string { return filepath.Join(s.root, string(a)) }

// WriteAreaFile writes data durably to name in area (created if needed)
// through a temp file of the Store's scratch and a rename, so readers see a
// whole file or none and a killed writer leaves nothing in the area.
func (s *Store) WriteAreaFile(ctx context.Context, a Area, name string, data []byte) error {
	dir, err := s.Dir(a)
	if err != nil {
		return err
	}
	if err := s.writeFileAtomic(ctx, dir, name, data); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	return nil
}

// Scratch is a private directory in a scratch area of the store, alive for
// as long as its owner holds it open: the owner keeps an exclusive flock on
// the directory itself, so any process that opens the store can tell a
// live scratch directory from one whose owner died (the kernel releases
// the lock with the process), whatever its age or name, and however long
// the build that owns it runs. Close removes it. A Scratch is safe for
// concurrent use; Close may be called more than once.
type Scratch struct {
	dir  string
	lock *os.File
	once sync.Once
	err  error
}

// scratchPrefix marks the names of lock-held scratch directories; entries
// of a scratch area without it were made by an older builder.
const scratchPrefix = "s-"

// NewScratch creates a scratch directory in area (Temp or Active), named
// after purpose, and locks it.
func (s *Store) NewScratch(a Area, purpose string) (*Scratch, error) {
	if a != Temp && a != Active {
		return nil, fmt.Errorf("scratch directory in %s: not a scratch area", a)
	}
	area, err := s.Dir(a)
	if err != nil {
		return nil, err
	}
	for {
		dir, err := os.MkdirTemp(area, scratchPrefix+purpose+"-*")
		if err != nil {
			return nil, fmt.Errorf("create scratch directory: %w", err)
		}
		lock, err := lockNew(dir)
		if err != nil {
			return nil, fmt.Errorf("create scratch directory %s: %w", dir, err)
		}
		if lock != nil {
			return &Scratch{dir: dir, lock: lock}, nil
		}
		// Another process's cleanup took the new directory between the
		// mkdir and the lock: make another.
	}
}

// lockNew locks the directory dir just made. It returns nil and no error
// when a cleanup removed dir before the lock was taken.
func lockNew(dir string) (*os.File, error) {
	f, held, err := tryLockDir(dir)
	if err != nil || !held {
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		return nil, err
	}
	var fst, pst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		f.Close()
		return nil, err
	}
	if err := unix.Lstat(dir, &pst); err != nil || fst.Nlink == 0 || fst.Ino != pst.Ino || fst.Dev != pst.Dev {
		f.Close()
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, err
		}
		return nil, nil
	}
	return f, nil
}

// tryLockDir opens dir and takes its flock without waiting. held is false
// when another process holds it.
func tryLockDir(dir string) (f *os.File, held bool, err error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	f = os.NewFile(uintptr(fd), dir)
	for {
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	switch {
	case err == nil:
		return f, true, nil
	case errors.Is(err, unix.EWOULDBLOCK):
		f.Close()
		return nil, false, nil
	default:
		f.Close()
		return nil, false, fmt.Errorf("lock %s: %w", dir, err)
	}
}

// Path returns the scratch directory.
func (sc *Scratch) Path() string { return sc.dir }

// Close removes the directory and releases its lock.
func (sc *Scratch) Close() error {
	sc.once.Do(func() {
		sc.err = os.RemoveAll(sc.dir)
		if err := sc.lock.Close(); sc.err == nil {
			sc.err = err
		}
		if sc.err != nil {
			sc.err = fmt.Errorf("remove scratch directory: %w", sc.err)
		}
	})
	return sc.err
}

// CleanScratch removes every entry of the scratch areas that no live
// process holds, and returns the bytes it freed. Open calls it; prune
// reports what it frees.
func (s *Store) CleanScratch() (int64, error) {
	var freed int64
	for _, a := range scratchAreas {
		n, err := s.cleanArea(a)
		freed += n
		if err != nil {
			return freed, err
		}
	}
	return freed, nil
}

func (s *Store) cleanArea(a Area) (int64, error) {
	area := filepath.Join(s.root, string(a))
	entries, err := os.ReadDir(area)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var freed int64
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), scratchPrefix) || !e.IsDir() {
			continue // an older builder's entry: see cleanLegacyTemp
		}
		n, err := removeUnheld(filepath.Join(area, e.Name()))
		freed += n
		if err != nil {
			return freed, err
		}
	}
	return freed, nil
}

// removeUnheld removes the scratch directory dir if no process holds it,
// keeping the lock while it removes, so its owner (had it just made dir)
// sees it gone and makes another.
func removeUnheld(dir string) (int64, error) {
	f, held, err := tryLockDir(dir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && !held) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := treeSize(dir)
	if err := os.RemoveAll(dir); err != nil {
		return 0, fmt.Errorf("remove abandoned scratch directory %s: %w", dir, err)
	}
	return n, nil
}

// treeSize is the apparent size of the files under dir.
func treeSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// RemoveLegacyActive removes the entries of the Active area that builders
// before lock-held scratch directories left there (active snapshots
// directly under active/), and returns the bytes freed. They carry no
// lock, so the caller must hold the store's exclusive lock (Lock): then no
// build of any version is running.
func (s *Store) RemoveLegacyActive(ctx context.Context) (int64, error) {
	area := s.AreaPath(Active)
	entries, err := os.ReadDir(area)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var freed int64
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return freed, err
		}
		if strings.HasPrefix(e.Name(), scratchPrefix) {
			continue
		}
		p := filepath.Join(area, e.Name())
		n := treeSize(p)
		if err := os.RemoveAll(p); err != nil {
			return freed, fmt.Errorf("remove abandoned snapshot %s: %w", p, err)
		}
		freed += n
	}
	return freed, nil
}
