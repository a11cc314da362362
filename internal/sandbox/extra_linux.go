package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// extras are the extra mounts of a sandbox being set up, in mount order,
// and which of them are mounted already.
type extras struct {
	cfg     *config
	files   string // the scratch directory for Files' content
	list    []extraMount
	mounted []bool
}

func newExtras(cfg *config, files string) *extras {
	list := extraMounts(cfg.Binds, cfg.Tmpfs, cfg.Files)
	return &extras{cfg: cfg, files: files, list: list, mounted: make([]bool, len(list))}
}

// rel is the target of an extra mount relative to the root.
func (m extraMount) rel() string {
	return strings.TrimPrefix(filepath.Clean(m.target), "/")
}

// system mounts a system mount point rel (relative to the root) with
// mnt, unless an extra mount targets rel: that one is mounted there
// instead (the last of them, as runc's deduplication keeps the last).
func (sb *sandbox) system(ex *extras, rel string, dir bool, mnt func(p string) error) error {
	take := -1
	for i, m := range ex.list {
		if m.rel() == rel {
			take = i
		}
	}
	if take < 0 {
		p, err := sb.mountPoint(rel, dir)
		if err != nil {
			return err
		}
		return mnt(p)
	}
	for i, m := range ex.list {
		if m.rel() == rel {
			ex.mounted[i] = true // replaced, with the system mount
		}
	}
	return sb.mountExtra(ex, take)
}

// mountExtras performs the extra mounts not mounted yet on the root
// (before the pivot), parents first.
func (sb *sandbox) mountExtras(ex *extras) error {
	for i := range ex.list {
		if ex.mounted[i] {
			continue
		}
		if err := sb.mountExtra(ex, i); err != nil {
			return err
		}
	}
	return nil
}

// mountExtra performs extra mount i. Secret files are written to the
// scratch tmpfs and bound read-only.
func (sb *sandbox) mountExtra(ex *extras, i int) error {
	ex.mounted[i] = true
	m, cfg := ex.list[i], ex.cfg
	switch m.kind {
	case 'b':
		return sb.bind(cfg.Binds[m.i], m.rel())
	case 't':
		return sb.tmpfs(cfg.Tmpfs[m.i], m.rel())
	default:
		return sb.file(cfg.Files[m.i], filepath.Join(ex.files, "file-"+strconv.Itoa(m.i)), m.rel())
	}
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
	if !sb.insecure {
		// A bound tree (another stage, a cache) may hold device nodes
		// a RUN made: none can be opened (see mountDev).
		if err := setNodev(p); err != nil {
			return err
		}
	}
	if b.ReadOnly {
		return remountReadonly(p, rel)
	}
	return nil
}

func remountReadonly(p, rel string) error {
	if err := remountWith(p, unix.MS_RDONLY); err != nil {
		return fmt.Errorf("remount /%s read-only: %w", rel, err)
	}
	return nil
}

func (sb *sandbox) tmpfs(t Tmpfs, rel string) error {
	p, err := sb.mountPoint(rel, true)
	if err != nil {
		return err
	}
	data := ""
	if t.Size > 0 {
		data = "size=" + strconv.FormatInt(t.Size, 10)
	}
	if err := unix.Mount("tmpfs", p, "tmpfs", tmpfsFlags(t, sb.insecure), data); err != nil {
		return fmt.Errorf("mount tmpfs on /%s: %w", rel, err)
	}
	return nil
}

// tmpfsFlags are BuildKit's flags of a tmpfs mount, nosuid, and ro when
// asked, plus nodev (see mountDev) unless insecure.
func tmpfsFlags(t Tmpfs, insecure bool) uintptr {
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if insecure {
		flags &^= unix.MS_NODEV
	}
	if t.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	return flags
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
	// Exactly ro and nodev: not the scratch tmpfs's noexec, which would
	// stop a heredoc script from running.
	if err := unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("remount /%s read-only: %w", rel, err)
	}
	return nil
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
