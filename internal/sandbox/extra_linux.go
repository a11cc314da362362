package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mountExtras performs cfg's Binds, Tmpfs and Files on the root (before
// the pivot), parents first. Secret files are written to the scratch
// tmpfs at files and bound read-only.
func (sb *sandbox) mountExtras(cfg *config, files string) error {
	for _, m := range extraMounts(cfg.Binds, cfg.Tmpfs, cfg.Files) {
		rel := strings.TrimPrefix(filepath.Clean(m.target), "/")
		var err error
		switch m.kind {
		case 'b':
			err = sb.bind(cfg.Binds[m.i], rel)
		case 't':
			err = sb.tmpfs(cfg.Tmpfs[m.i], rel)
		case 'f':
			err = sb.file(cfg.Files[m.i], filepath.Join(files, "file-"+strconv.Itoa(m.i)), rel)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (sb *sandbox) bind(b Bind, rel string) error {
	fi, err := os.Stat(b.Source)
	if err != nil {
		return fmt.Errorf("bind source: %w", err)
	}
	p, err := sb.mountPoint(rel, fi.IsDir())
	if err != nil {
		return err
	}
	if err := unix.Mount(b.Source, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on /%s: %w", b.Source, rel, err)
	}
	if b.ReadOnly {
		return remountReadonly(p, rel)
	}
	return nil
}

func remountReadonly(p, rel string) error {
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_REC)
	if err := unix.Mount("", p, "", flags, ""); err != nil {
		return fmt.Errorf("remount /%s read-only: %w", rel, err)
	}
	return nil
}

func (sb *sandbox) tmpfs(t Tmpfs, rel string) error {
	p, err := sb.mountPoint(rel, true)
	if err != nil {
		return err
	}
	opts := "mode=1777"
	if t.Size > 0 {
		opts += ",size=" + strconv.FormatInt(t.Size, 10)
	}
	if err := unix.Mount("tmpfs", p, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount tmpfs on /%s: %w", rel, err)
	}
	return nil
}

// file writes f into the scratch tmpfs at src and binds it read-only.
func (sb *sandbox) file(f File, src, rel string) error {
	if err := os.WriteFile(src, f.Data, 0o600); err != nil {
		return fmt.Errorf("write file for /%s: %w", rel, err)
	}
	if err := os.Lchown(src, int(f.UID), int(f.GID)); err != nil {
		return fmt.Errorf("chown file for /%s: %w", rel, err)
	}
	if err := os.Chmod(src, os.FileMode(f.Mode&0o7777)); err != nil {
		return fmt.Errorf("chmod file for /%s: %w", rel, err)
	}
	p, err := sb.mountPoint(rel, false)
	if err != nil {
		return err
	}
	if err := unix.Mount(src, p, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind file on /%s: %w", rel, err)
	}
	return remountReadonly(p, rel)
}

// scratchSize is the size of the scratch tmpfs: room for the generated
// /etc files and every File.
func scratchSize(files []File) int64 {
	n := int64(4 << 20)
	for _, f := range files {
		n += int64(len(f.Data)) + 4096
	}
	return n
}
