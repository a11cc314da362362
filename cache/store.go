// Package cache is builder's on-disk store: content-addressed blobs, cache
// keys mapped to step results, the local image index (tags), build records,
// a memo of context file hashes, locking and garbage collection.
//
// # Layout
//
//	<root>/blobs/sha256/<hex>   content-addressed blobs, verified on read
//	<root>/keys/<hex>.json      cache key → Record
//	<root>/images/index.json    OCI image index of tagged images
//	                            (index.json.bak: its copy, for RepairIndex)
//	<root>/builds/<id>.json     build records
//	<root>/hashes/<xx>.memo     context file hash memo, 256 shards
//	<root>/tmp/s-<purpose>-*/   per-process scratch (files being written,
//	                            a build's mount points and sandboxes)
//	<root>/active/s-build-*/    a build's active snapshots
//	<root>/snapshots/, runcache/, compressed/, urls/
//	                            areas other packages get from Dir
//	<root>/lock                 flock: builds hold it shared, Prune exclusive
//
// A scratch directory lives as long as its owner holds the flock it keeps
// on it (see Scratch): Open removes the ones no live process holds, so a
// build of any length is safe beside other commands, and a killed one's
// leftovers go at the next command.
//
// Every directory is created 0700. Every write goes to a temp file in tmp/,
// is fsynced and renamed into place, and the parent directory is fsynced, so
// readers never see a torn file and a record is never visible before the
// blobs it names (callers write blobs first; Put checks Record.Blobs).
//
// A Store is safe for concurrent use by many goroutines, and several
// processes may open the same root at once.
package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

var (
	// ErrNotFound is returned when a blob, record, tag or build is absent.
	ErrNotFound = errors.New("cache: not found")
	// ErrCorrupt is returned when stored data does not match its digest or
	// cannot be decoded. The offending entry has been removed.
	ErrCorrupt = errors.New("cache: corrupt")
)

const (
	dirPerm  = 0o700
	filePerm = 0o600

	// staleTemp and orphanGrace apply only to entries of tmp/ made by
	// builders before scratch directories were lock-held (files named
	// "<pid>.<rand>", "build-*" directories): such an entry is removed
	// when older than staleTemp, or older than orphanGrace with its
	// writer's pid gone.
	staleTemp   = time.Hour
	orphanGrace = time.Minute
)

var subdirs = []string{
	filepath.Join("blobs", "sha256"),
	"keys",
	"images",
	"builds",
	"hashes",
	"tmp",
}

// Store is an open cache root. The zero value is not usable; call Open.
type Store struct {
	root   string
	tmp    string
	blobs  string
	keys   string
	images string
	builds string
	hashes *memo
	// hashBufs are the read buffers of HashFileMeta, kept between files:
	// one per file would cost an allocation, and its clearing, each.
	hashBufs sync.Pool
	// indexSem serializes this process's index updates, so its goroutines
	// queue here instead of polling the index flock.
	indexSem chan struct{}

	// scratch holds this Store's temp files; made on first use.
	scratchMu sync.Mutex
	scratch   *Scratch
	// freedAtOpen is what Open's CleanScratch freed.
	freedAtOpen int64
}

// Open creates (if needed) and opens the store at root. Directories are
// created with mode 0700 and tightened to 0700 if they already exist.
// Scratch directories and temp files no live process holds (left by
// killed commands) are removed.
func Open(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("open cache: empty root path")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", root, err)
	}
	for _, d := range append([]string{""}, subdirs...) {
		if err := makePrivateDir(filepath.Join(abs, d)); err != nil {
			return nil, fmt.Errorf("open cache %s: %w", abs, err)
		}
	}
	s := &Store{
		root:   abs,
		tmp:    filepath.Join(abs, "tmp"),
		blobs:  filepath.Join(abs, "blobs", "sha256"),
		keys:   filepath.Join(abs, "keys"),
		images: filepath.Join(abs, "images"),
		builds: filepath.Join(abs, "builds"),

		indexSem: make(chan struct{}, 1),
	}
	s.hashes = newMemo(filepath.Join(abs, "hashes"), s)
	s.hashBufs.New = func() any { b := make([]byte, 256<<10); return &b }
	if s.freedAtOpen, err = s.CleanScratch(); err != nil {
		return nil, fmt.Errorf("open cache %s: %w", abs, err)
	}
	if err := s.cleanLegacyTemp(time.Now()); err != nil {
		return nil, fmt.Errorf("open cache %s: %w", abs, err)
	}
	return s, nil
}

// ScratchFreedAtOpen returns the bytes of abandoned scratch directories
// that Open removed.
func (s *Store) ScratchFreedAtOpen() int64 { return s.freedAtOpen }

// Root returns the absolute path of the store.
func (s *Store) Root() string { return s.root }

// Close writes the file hash memo (see FlushHashes), removes the Store's
// scratch directory and releases the store. Locks returned by Lock and
// RLock, and Scratch directories from NewScratch, are independent of Close.
func (s *Store) Close() error {
	err := s.FlushHashes(context.Background())
	s.scratchMu.Lock()
	defer s.scratchMu.Unlock()
	if s.scratch != nil {
		if cerr := s.scratch.Close(); err == nil {
			err = cerr
		}
		s.scratch = nil
	}
	return err
}

func makePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: not a directory", dir)
	}
	if fi.Mode().Perm() != dirPerm {
		return os.Chmod(dir, dirPerm)
	}
	return nil
}

// cleanLegacyTemp removes the entries of tmp/ made by older builders
// (without the scratch prefix) by their age and their writer's pid.
func (s *Store) cleanLegacyTemp(now time.Time) error {
	entries, err := os.ReadDir(s.tmp)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), scratchPrefix) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed concurrently
		}
		age := now.Sub(fi.ModTime())
		if age > staleTemp || (age > orphanGrace && writerGone(e.Name())) {
			if err := os.RemoveAll(filepath.Join(s.tmp, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// writerGone reports whether the pid encoded in a legacy temp name
// ("<pid>.<rand>") is not a live process. Names without a pid count as gone.
func writerGone(name string) bool {
	p, _, _ := strings.Cut(name, ".")
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 {
		return true
	}
	if pid == os.Getpid() {
		return false
	}
	return errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

// ScratchDir returns the Store's own scratch directory (made on first use),
// which its lock keeps alive until Close or this process's death, and which
// the next Open after that removes: the place for files and directories
// being written that are renamed into the store when whole.
func (s *Store) ScratchDir() (string, error) {
	s.scratchMu.Lock()
	defer s.scratchMu.Unlock()
	if s.scratch == nil {
		sc, err := s.NewScratch(Temp, "proc")
		if err != nil {
			return "", err
		}
		s.scratch = sc
	}
	return s.scratch.Path(), nil
}

// createTemp creates a temp file in the Store's scratch directory.
func (s *Store) createTemp() (*os.File, error) {
	dir, err := s.ScratchDir()
	if err != nil {
		return nil, err
	}
	return os.CreateTemp(dir, "w-*")
}

// durability says whether a write must survive a power loss.
type durability int

const (
	// durable: fsync the file before the rename and the directory after.
	durable durability = iota
	// bestEffort: rename only; for data that is checksummed and can be
	// recomputed (the hash memo), where a lost write costs only time.
	bestEffort
)

// writeFileAtomic writes data to dir/name durably.
func (s *Store) writeFileAtomic(ctx context.Context, dir, name string, data []byte) error {
	return s.writeFile(ctx, dir, name, data, durable)
}

// writeFile writes data to dir/name via a temp file and a rename, so readers
// see the old or the new content, never a mix. Concurrent writers of the
// same name all succeed; the last rename wins.
func (s *Store) writeFile(ctx context.Context, dir, name string, data []byte, d durability) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := s.createTemp()
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if d == durable {
		if err = f.Sync(); err != nil {
			return err
		}
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	if d == durable {
		return syncDir(dir)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// ctxReader fails a long read once ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   interface{ Read([]byte) (int, error) }
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
