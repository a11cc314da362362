package snapshot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// CheckOverlay reports whether an overlay filesystem can be mounted with
// its upper and work directories under dir, by mounting and unmounting a
// tiny one. Callers fall back to the copy snapshotter when it fails.
func CheckOverlay(ctx context.Context, dir string) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(dir, "overlay-check-")
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.RemoveAll(tmp); rerr != nil && err == nil {
			err = rerr
		}
	}()
	names := []string{"lower", "upper", "work", "merged"}
	for _, n := range names {
		if err := os.Mkdir(filepath.Join(tmp, n), 0o700); err != nil {
			return err
		}
	}
	m := Mount{Type: "overlay", Source: "overlay", Options: []string{
		"lowerdir=" + filepath.Join(tmp, "lower"),
		"upperdir=" + filepath.Join(tmp, "upper"),
		"workdir=" + filepath.Join(tmp, "work"),
	}}
	m.Options = append(m.Options, overlayMountOptions()...)
	target := filepath.Join(tmp, "merged")
	if err := m.Mount(target); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	return unix.Unmount(target, 0)
}
