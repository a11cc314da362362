package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Lock takes the store's exclusive lock (flock on <root>/lock), waiting
// until it is free or ctx is done. Prune holds it; builds hold RLock. The
// kernel releases the lock when the holder dies, so a crash never leaves a
// stale lock. Locks are per open file: a process that holds RLock and then
// calls Lock waits for itself, so don't.
func (s *Store) Lock(ctx context.Context) (unlock func(), err error) {
	return flockPath(ctx, filepath.Join(s.root, "lock"), unix.LOCK_EX)
}

// RLock takes the store's shared lock; any number of builds may hold it.
func (s *Store) RLock(ctx context.Context) (unlock func(), err error) {
	return flockPath(ctx, filepath.Join(s.root, "lock"), unix.LOCK_SH)
}

// flockPath opens (creating, 0600, close-on-exec) path and flocks it with
// how, polling with a growing delay so ctx can interrupt the wait. The
// returned func releases the lock; calling it again is harmless.
func flockPath(ctx context.Context, path string, how int) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, filePerm)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	delay := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
	var once sync.Once
	return func() { once.Do(func() { f.Close() }) }, nil
}
