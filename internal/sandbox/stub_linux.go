package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// stub is a file or directory the init created in the root only to mount
// on it.
type stub struct {
	rel string
}

// ensure resolves rel inside the root (symlinks cannot leave it) and
// creates what is missing of it: directories, and the last element as a
// directory (dir) or an empty file. It returns the resolved host path.
func (sb *sandbox) ensure(rel string, dir bool) (string, error) {
	full, err := securejoin.SecureJoin(sb.root, rel)
	if err != nil {
		return "", fmt.Errorf("resolve /%s in root: %w", rel, err)
	}
	resolved, err := filepath.Rel(sb.root, full)
	if err != nil || resolved == "." || strings.HasPrefix(resolved, "..") {
		return "", fmt.Errorf("resolve /%s in root: got %s", rel, full)
	}
	parts := strings.Split(resolved, string(filepath.Separator))
	for i := range parts {
		last := i == len(parts)-1
		cur := filepath.Join(parts[:i+1]...)
		if err := sb.ensureOne(cur, dir || !last); err != nil {
			return "", fmt.Errorf("mount point /%s: %w", rel, err)
		}
	}
	return full, nil
}

// ensureOne makes sure rel exists with the right type, creating it as a
// stub when missing.
func (sb *sandbox) ensureOne(rel string, dir bool) error {
	p := filepath.Join(sb.root, rel)
	fi, err := os.Lstat(p)
	switch {
	case err == nil && dir && !fi.IsDir():
		return fmt.Errorf("/%s exists and is not a directory", rel)
	case err == nil && !dir && fi.IsDir():
		return fmt.Errorf("/%s exists and is a directory", rel)
	case err == nil:
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	if dir {
		err = unix.Mkdir(p, 0o755)
	} else {
		err = createFile(p)
	}
	inMount := sb.underTarget(rel)
	if inMount && errors.Is(err, unix.EEXIST) {
		// Another RUN sharing the mount (a cache mount of a parallel
		// stage) created it first.
		return nil
	}
	if err != nil {
		return fmt.Errorf("create /%s: %w", rel, err)
	}
	if inMount {
		// Created inside a mount (a cache or bind mount), not in the
		// root's own tree: it is in no layer, and removing it could
		// detach a parallel RUN's mount on it.
		return nil
	}
	sb.stubs = append(sb.stubs, stub{rel: rel})
	return nil
}

// underTarget reports whether rel lies strictly below a mount point the
// sandbox has mounted on.
func (sb *sandbox) underTarget(rel string) bool {
	for _, t := range sb.targets {
		if strings.HasPrefix(rel, t+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

func createFile(p string) error {
	fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// removeStubs removes the stubs newest first. A stub directory the command
// filled is real content now: it stays. Removing a stub leaves its parent
// the times it had just before, as BuildKit's stub cleaner does: the
// parent keeps what the command did to it, and the stub's creation (the
// parent's times from then on are the RUN's, like everything it changed).
func (sb *sandbox) removeStubs() error {
	var errs []error
	for i := len(sb.stubs) - 1; i >= 0; i-- {
		s := sb.stubs[i]
		p := filepath.Join(sb.root, s.rel)
		parent := filepath.Dir(p)
		var st unix.Stat_t
		if err := unix.Lstat(parent, &st); err != nil {
			errs = append(errs, fmt.Errorf("stat parent of stub /%s: %w", s.rel, err))
			continue
		}
		if err := unix.Unlinkat(unix.AT_FDCWD, p, unlinkFlags(p)); err != nil {
			if err != unix.ENOTEMPTY && err != unix.EEXIST && err != unix.ENOENT {
				errs = append(errs, fmt.Errorf("remove stub /%s: %w", s.rel, err))
			}
			continue
		}
		ts := []unix.Timespec{st.Atim, st.Mtim}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, parent, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			errs = append(errs, fmt.Errorf("restore times of %s: %w", parent, err))
		}
	}
	sb.stubs = nil
	return errors.Join(errs...)
}

func unlinkFlags(p string) int {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return unix.AT_REMOVEDIR
	}
	return 0
}
