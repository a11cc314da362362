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

// copyMkdirAll creates dir and its missing parents inside rootfs, 0755,
// owned by own (root unless --chown), like BuildKit's CreateDestPath.
func copyMkdirAll(rootfs, dir string, own copyOwner) error {
	cur := "/"
	for _, comp := range strings.Split(strings.Trim(path.Clean("/"+dir), "/"), "/") {
		if comp == "" {
			continue
		}
		cur = path.Join(cur, comp)
		host, err := securejoin.SecureJoin(rootfs, cur)
		if err != nil {
			return fmt.Errorf("resolve %s in rootfs: %w", cur, err)
		}
		fi, err := os.Stat(host)
		if err == nil && fi.IsDir() {
			continue
		}
		if err == nil {
			return fmt.Errorf("mkdir %s: not a directory", cur)
		}
		if err := os.Mkdir(host, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", cur, err)
		}
		if err := snapshot.Lchown(host, own.uid, own.gid); err != nil {
			return fmt.Errorf("chown %s: %w", cur, err)
		}
	}
	return nil
}
