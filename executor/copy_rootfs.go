package executor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/builder-dev/builder/snapshot"
	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// copyClear removes an existing non-directory at host so that it is
// replaced rather than written through; a directory stays when a directory
// is wanted and is an error otherwise.
func copyClear(host, dst string, wantDir bool) error {
	fi, err := os.Lstat(host)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", dst, err)
	}
	switch {
	case fi.IsDir() && wantDir:
		return nil
	case fi.IsDir():
		return fmt.Errorf("copy to %s: cannot replace a directory with a file", dst)
	}
	if err := os.Remove(host); err != nil {
		return fmt.Errorf("replace %s: %w", dst, err)
	}
	return nil
}

// copyHostPath resolves the parent of dst inside rootfs (following
// symlinks inside it) and appends the final name unresolved.
func copyHostPath(rootfs, dst string) (string, error) {
	dst = path.Clean("/" + dst)
	if dst == "/" {
		return rootfs, nil
	}
	parent, err := securejoin.SecureJoin(rootfs, path.Dir(dst))
	if err != nil {
		return "", fmt.Errorf("resolve %s in rootfs: %w", dst, err)
	}
	return filepath.Join(parent, path.Base(dst)), nil
}

// copyIsDir reports whether dst, symlinks followed inside rootfs, is a
// directory.
func copyIsDir(rootfs, dst string) (bool, error) {
	host, err := securejoin.SecureJoin(rootfs, dst)
	if err != nil {
		return false, fmt.Errorf("resolve %s in rootfs: %w", dst, err)
	}
	fi, err := os.Stat(host)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", dst, err)
	}
	return fi.IsDir(), nil
}

// mkdirAllIn creates dir and its missing parents inside rootfs with mode
// (umask ignored), owned by own, like fsutil's MkdirAll as BuildKit calls
// it: dir is resolved inside rootfs first, symlinks included, so a
// destination through a symlink to a missing directory (../tmp/target)
// creates that directory and its missing parents.
func mkdirAllIn(rootfs, dir string, mode uint32, own copyOwner) error {
	host, err := securejoin.SecureJoin(rootfs, dir)
	if err != nil {
		return fmt.Errorf("resolve %s in rootfs: %w", dir, err)
	}
	root := filepath.Clean(rootfs)
	var missing []string // innermost first
	for p := host; len(p) > len(root); p = filepath.Dir(p) {
		fi, err := os.Lstat(p)
		if err == nil && fi.IsDir() {
			break
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		if err == nil {
			return fmt.Errorf("mkdir %s: not a directory", rel)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("stat %s: %w", rel, err)
		}
		missing = append(missing, p)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		p := missing[i]
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		if err := os.Mkdir(p, 0o700); err != nil {
			return fmt.Errorf("mkdir %s: %w", rel, err)
		}
		if err := snapshot.Lchown(p, own.uid, own.gid); err != nil {
			return fmt.Errorf("chown %s: %w", rel, err)
		}
		if err := unix.Chmod(p, mode); err != nil {
			return fmt.Errorf("chmod %s: %w", rel, err)
		}
	}
	return nil
}
