package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"golang.org/x/sys/unix"
)

// errLockBusy is a non-blocking lock that another holder has.
var errLockBusy = errors.New("lock busy")

// prepareCache locks the cache mount's directory as its sharing mode says,
// creates it on first use, and binds it. A private cache that another
// step holds gets a fresh directory for this step only, as BuildKit's.
func (b *build) prepareCache(ctx context.Context, rm *runMount, sm *stepMounts) error {
	// The store's RunCache area holds the cache directories. A cache is
	// named by a sha256 (cacheDirName), so no id can name a path outside it
	// (RELIABILITY RUN-05); <hex>.lock beside it is flocked by its users:
	// shared by sharing=shared, exclusively by locked and private.
	base, err := b.e.opts.Cache.Dir(cache.RunCache)
	if err != nil {
		return fmt.Errorf("create cache mount directory: %w", err)
	}
	name := cacheDirName(rm)
	how := unix.LOCK_SH
	switch instructions.ShareMode(rm.Sharing) {
	case instructions.MountSharingLocked:
		how = unix.LOCK_EX
	case instructions.MountSharingPrivate:
		how = unix.LOCK_EX | unix.LOCK_NB
	}
	lockPath := filepath.Join(base, name+".lock")
	unlock, err := flockFile(ctx, lockPath, how)
	if err == nil {
		// The lock file's time is the cache's last use, by which the
		// store's garbage collection ages caches.
		now := time.Now()
		_ = os.Chtimes(lockPath, now, now)
	}
	dir := filepath.Join(base, name)
	switch {
	case errors.Is(err, errLockBusy):
		tmp, err := os.MkdirTemp(b.e.opts.TempDir, "cache-")
		if err != nil {
			return err
		}
		sm.cleanup = append(sm.cleanup, func() error { return os.RemoveAll(tmp) })
		if dir, err = b.initCache(ctx, rm, tmp); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("RUN --mount=type=cache,id=%s: lock: %w", rm.ID, err)
	default:
		sm.cleanup = append(sm.cleanup, unlock)
		if b.renewCache(dir) {
			if err := b.replaceCache(ctx, rm, base, dir); err != nil {
				return err
			}
		} else if err := b.ensureCache(ctx, rm, base, dir); err != nil {
			return err
		}
	}
	sm.binds = append(sm.binds, sandbox.Bind{Source: dir, Target: rm.Target, ReadOnly: rm.ReadOnly})
	return nil
}

// cacheDirName names a cache mount's directory: the sha256 of its id,
// and of its base where it has one. BuildKit keys a cache by its id and
// the ref it starts from: none for a plain cache, the stage or image of
// from=, or the directory that uid=, gid= or mode= make. So one id with
// other options or another from= is another cache.
func cacheDirName(rm *runMount) string {
	key := rm.ID
	switch {
	case rm.From != "":
		key += "\x00from " + rm.FromKey
	case rm.UID != nil || rm.GID != nil || rm.Mode != nil:
		mode := uint64(0o755)
		if rm.Mode != nil {
			mode = *rm.Mode
		}
		key += fmt.Sprintf("\x00mkdir %o %d:%d", mode, deref(rm.UID), deref(rm.GID))
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// ensureCache creates the cache directory dir if it does not exist yet:
// built beside it and renamed, so a concurrent first user sees either
// nothing or the whole initial content.
func (b *build) ensureCache(ctx context.Context, rm *runMount, base, dir string) error {
	fi, err := os.Lstat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("cache mount directory %s is not a directory", dir)
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	tmp, err := os.MkdirTemp(base, ".new-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	made, err := b.initCache(ctx, rm, tmp)
	if err != nil {
		return err
	}
	if err := os.Rename(made, dir); err != nil && !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.ENOTEMPTY) {
		return fmt.Errorf("create cache mount directory: %w", err)
	}
	return nil
}

// renewCache reports whether the cache directory dir must start afresh:
// a --no-cache build gives each cache mount a new, empty directory the
// first time it uses it, which later builds then share (BuildKit
// testCacheMountModeNoCache, moby/buildkit#5305).
func (b *build) renewCache(dir string) bool {
	if !b.e.opts.NoCache {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.renewed[dir] {
		return false
	}
	if b.renewed == nil {
		b.renewed = map[string]bool{}
	}
	b.renewed[dir] = true
	return true
}

// replaceCache puts a new cache directory at dir, atomically: steps of
// other builds that have the old one mounted keep it until they end.
func (b *build) replaceCache(ctx context.Context, rm *runMount, base, dir string) error {
	tmp, err := os.MkdirTemp(base, ".new-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	made, err := b.initCache(ctx, rm, tmp)
	if err != nil {
		return err
	}
	if err := os.Rename(dir, filepath.Join(tmp, "old")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("renew cache mount directory: %w", err)
	}
	if err := os.Rename(made, dir); err != nil {
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			// Between the two renames a parallel step found no
			// directory and made a fresh one (ensureCache): it serves.
			return nil
		}
		return fmt.Errorf("renew cache mount directory: %w", err)
	}
	return nil
}

// initCache makes a new cache directory in parent and returns it: a copy
// of from's source, or an empty directory with the mount's mode and
// owner (0755 root).
func (b *build) initCache(ctx context.Context, rm *runMount, parent string) (string, error) {
	dir := filepath.Join(parent, "cache")
	if rm.From != "" {
		p, err := copyPrepare(ctx, copyRequest{Sources: []string{buildcontext.Clean(rm.Source)}, Dest: "/cache", SrcRoot: rm.srcRoot, TempDir: b.e.opts.TempDir})
		if err != nil {
			return "", fmt.Errorf("RUN --mount=type=cache,from=%s,source=%s: %w", rm.From, rm.Source, err)
		}
		defer p.Close()
		if err := p.Apply(ctx, parent); err != nil {
			return "", fmt.Errorf("RUN --mount=type=cache,from=%s: %w", rm.From, err)
		}
	} else if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	if rm.Mode != nil {
		if err := unix.Chmod(dir, uint32(*rm.Mode&0o7777)); err != nil {
			return "", err
		}
	}
	if rm.UID != nil || rm.GID != nil {
		if err := os.Lchown(dir, int(deref(rm.UID)), int(deref(rm.GID))); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// flockFile opens (creating, 0600) p and flocks it with how, polling so
// that ctx can interrupt the wait. With LOCK_NB in how, a held lock is
// errLockBusy at once. The returned func releases the lock.
func flockFile(ctx context.Context, p string, how int) (func() error, error) {
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	delay := 5 * time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		switch {
		case err == nil:
			return f.Close, nil
		case err != unix.EWOULDBLOCK:
			f.Close()
			return nil, err
		case how&unix.LOCK_NB != 0:
			f.Close()
			return nil, errLockBusy
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}
