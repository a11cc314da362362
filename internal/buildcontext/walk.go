package buildcontext

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Entry is one visible entry below a walked directory.
type Entry struct {
	Rel  string      // resolved, slash-separated, relative to the context root
	Info fs.FileInfo // from Lstat: symlinks are not followed
}

// HasMeta reports whether p contains filepath.Match wildcards.
func HasMeta(p string) bool { return strings.ContainsAny(p, `*?[`) }

// Glob returns the visible paths (as written, relative to the root) that
// match pattern with filepath.Match semantics per path component. Directory
// components are resolved through symlinks inside the root; excluded
// entries never match. No match is an empty result, not an error; a
// match that is a symlink leading nowhere in the context is.
func (c *Context) Glob(ctx context.Context, pattern string) ([]string, error) {
	clean := Clean(pattern)
	if _, err := path.Match(clean, ""); err != nil {
		return nil, fmt.Errorf("glob %q: %w", pattern, err)
	}
	candidates := []string{"."}
	for _, comp := range strings.Split(clean, "/") {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var next []string
		for _, cand := range candidates {
			m, err := c.globComponent(cand, comp)
			if err != nil {
				return nil, err
			}
			next = append(next, m...)
		}
		candidates = next
	}
	var out []string
	for _, cand := range candidates {
		_, err := c.Resolve(cand)
		switch {
		case err == nil:
			out = append(out, cand)
		case !skipInGlob(err):
			return nil, err
		case c.isLink(cand):
			// A match is followed like a source written out: a symlink
			// that leads nowhere in the context (dangling, out of the
			// root, excluded, a loop) is an error, as in BuildKit.
			return nil, err
		}
	}
	sort.Strings(out)
	return out, nil
}

// isLink reports whether the written path p names a visible symlink: its
// directory resolves, and p's own entry in it is a symlink.
func (c *Context) isLink(p string) bool {
	dir, err := c.Resolve(path.Dir(Clean(p)))
	if err != nil {
		return false
	}
	fi, err := c.Lstat(path.Join(dir, path.Base(Clean(p))))
	return err == nil && fi.Mode()&fs.ModeSymlink != 0
}

// globComponent expands one path component below the written path dir.
func (c *Context) globComponent(dir, comp string) ([]string, error) {
	if !HasMeta(comp) {
		return []string{path.Join(dir, comp)}, nil
	}
	real, err := c.Resolve(dir)
	if skipInGlob(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names, err := c.readDirNames(real)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range names {
		if ok, _ := path.Match(comp, name); !ok {
			continue
		}
		if _, err := c.vfs().Lstat(c.HostPath(path.Join(real, name))); err != nil {
			continue // excluded
		}
		out = append(out, path.Join(dir, name))
	}
	return out, nil
}

// skipInGlob reports whether a resolution error just means "no match":
// the path is absent, excluded, or a symlink loop.
func skipInGlob(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, syscall.ELOOP)
}

// readDirNames lists a resolved directory; a non-directory has no entries.
func (c *Context) readDirNames(rel string) ([]string, error) {
	f, names, err := c.openDir(rel)
	if f != nil {
		f.Close()
	}
	return names, err
}

// openDir opens and lists a resolved directory, sorted; a non-directory
// gives a nil file and no entries. The caller closes the file.
func (c *Context) openDir(rel string) (*os.File, []string, error) {
	f, err := os.OpenFile(c.HostPath(rel), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY, 0)
	if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ELOOP) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read dir %q: %w", "/"+rel, err)
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("read dir %q: %w", "/"+rel, err)
	}
	sort.Strings(names)
	return f, names, nil
}

// Walk lists the visible entries below the resolved directory rel, parents
// before children, in lexical order, without following symlinks. An
// excluded directory that "!" patterns partly re-include is listed only
// when something below it is. Directories are read and their entries
// stat'ed in parallel (2×GOMAXPROCS at a time).
func (c *Context) Walk(ctx context.Context, rel string) ([]Entry, error) {
	w := &walker{c: c, ctx: ctx, slots: make(chan struct{}, 2*runtime.GOMAXPROCS(0))}
	out, err := w.walk(Clean(rel))
	if len(out) == 0 {
		return nil, err
	}
	return out[1:], err
}

// walkBatch is how many entries of one directory a walker goroutine stats.
const walkBatch = 64

// walker is one Walk. slots bounds its extra goroutines; work that finds
// no free slot runs inline, so nested fan-outs never deadlock.
type walker struct {
	c     *Context
	ctx   context.Context
	slots chan struct{}
}

// parallel calls fn(0..n-1), each on a new goroutine while a slot is free
// and inline otherwise, and returns the error of the lowest index.
func (w *walker) parallel(n int, fn func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case w.slots <- struct{}{}:
			wg.Add(1)
			go func() {
				defer func() { <-w.slots; wg.Done() }()
				errs[i] = fn(i)
			}()
		default:
			errs[i] = fn(i)
		}
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// walk lists the entries below dir after a first element left for dir
// itself (nil: nothing to list), so that a parent takes the list as it
// is: each level's list is made once, at its final size, instead of
// growing by appends into ever larger fresh arrays (whose new pages cost
// a fault each, as much as a system call, and more under a hypervisor).
func (w *walker) walk(dir string) ([]Entry, error) {
	f, names, err := w.c.openDir(dir)
	if err != nil || f == nil {
		return nil, err
	}
	infos, err := w.lstatAll(f, dir, names)
	f.Close()
	if err != nil {
		return nil, err
	}
	lists := make([][]Entry, len(names))
	rels := make([]string, len(names))
	var dirs []int
	for i, name := range names {
		rel := path.Join(dir, name)
		rels[i] = rel
		ex, err := w.c.Excluded(rel)
		if err != nil {
			return nil, err
		}
		switch {
		case infos[i].IsDir() && (!ex || w.c.hasExclusions()):
			dirs = append(dirs, i)
		case !ex && !infos[i].IsDir():
			lists[i] = []Entry{} // a file: listed from names and infos
		}
	}
	err = w.parallel(len(dirs), func(j int) error {
		i := dirs[j]
		rel := rels[i]
		sub, err := w.walk(rel)
		if err != nil {
			return err
		}
		if ex, _ := w.c.Excluded(rel); ex && len(sub) <= 1 {
			return nil
		}
		if sub == nil {
			sub = make([]Entry, 1)
		}
		sub[0] = Entry{Rel: rel, Info: infos[i]}
		lists[i] = sub
		return nil
	})
	if err != nil {
		return nil, err
	}
	n := 1
	for _, l := range lists {
		if l != nil {
			n += max(len(l), 1)
		}
	}
	out := make([]Entry, 1, n)
	for i, l := range lists {
		switch {
		case l == nil: // excluded
		case len(l) == 0: // a file
			out = append(out, Entry{Rel: rels[i], Info: infos[i]})
		default:
			out = append(out, l...)
		}
	}
	return out, nil
}

// lstatAll stats the entries names of the open directory d (at dir), in
// batches of walkBatch, relative to d: the kernel resolves one name, not
// the whole path.
func (w *walker) lstatAll(d *os.File, dir string, names []string) ([]fs.FileInfo, error) {
	infos := make([]fs.FileInfo, len(names))
	stats := make([]statInfo, len(names))
	fd := int(d.Fd())
	err := w.parallel((len(names)+walkBatch-1)/walkBatch, func(b int) error {
		for i := b * walkBatch; i < min(len(names), (b+1)*walkBatch); i++ {
			if err := w.ctx.Err(); err != nil {
				return err
			}
			if err := stats[i].lstatAt(fd, names[i]); err != nil {
				return fmt.Errorf("lstat %q: %w", "/"+path.Join(dir, names[i]), err)
			}
			infos[i] = &stats[i]
		}
		return nil
	})
	return infos, err
}

// statInfo is an fs.FileInfo made by fstatat, like os.Lstat's: Sys
// returns a *syscall.Stat_t.
type statInfo struct {
	name string
	st   syscall.Stat_t
}

func (fi *statInfo) lstatAt(dirfd int, name string) error {
	var st unix.Stat_t
	for {
		err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	fi.name = name
	fi.st = syscall.Stat_t{
		Dev: st.Dev, Ino: st.Ino, Nlink: st.Nlink, Mode: st.Mode, Uid: st.Uid, Gid: st.Gid,
		Rdev: st.Rdev, Size: st.Size, Blksize: st.Blksize, Blocks: st.Blocks,
		Atim: syscall.Timespec{Sec: st.Atim.Sec, Nsec: st.Atim.Nsec},
		Mtim: syscall.Timespec{Sec: st.Mtim.Sec, Nsec: st.Mtim.Nsec},
		Ctim: syscall.Timespec{Sec: st.Ctim.Sec, Nsec: st.Ctim.Nsec},
	}
	return nil
}

func (fi *statInfo) Name() string       { return fi.name }
func (fi *statInfo) Size() int64        { return fi.st.Size }
func (fi *statInfo) ModTime() time.Time { return time.Unix(fi.st.Mtim.Unix()) }
func (fi *statInfo) IsDir() bool        { return fi.Mode().IsDir() }
func (fi *statInfo) Sys() any           { return &fi.st }

// Mode converts the stat mode as os.Lstat does.
func (fi *statInfo) Mode() fs.FileMode {
	m := fs.FileMode(fi.st.Mode & 0o777)
	switch fi.st.Mode & syscall.S_IFMT {
	case syscall.S_IFBLK:
		m |= fs.ModeDevice
	case syscall.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFDIR:
		m |= fs.ModeDir
	case syscall.S_IFIFO:
		m |= fs.ModeNamedPipe
	case syscall.S_IFLNK:
		m |= fs.ModeSymlink
	case syscall.S_IFSOCK:
		m |= fs.ModeSocket
	}
	if fi.st.Mode&syscall.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if fi.st.Mode&syscall.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if fi.st.Mode&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}
