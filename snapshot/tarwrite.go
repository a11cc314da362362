package snapshot

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
	userOpaque     = "user.overlay.opaque"
)

// tarEntry is one entry of a layer tar before it is written. key orders the
// entries: the path, except that an opaque marker sorts first inside its
// directory, so appliers see it before any new child.
type tarEntry struct {
	key  string
	name string // name inside the tar; directories end in "/"
	src  string // absolute path in the layer directory; "" for markers
	st   unix.Stat_t
	kind entryKind
}

type entryKind int

const (
	kindFile entryKind = iota
	kindWhiteout
	kindOpaque
)

// writeLayerTar serializes the upper-format directory dir as a layer tar:
// PAX format, entries sorted by path, mtimes in whole seconds, no atime,
// ctime, uname or gname. It returns the number of bytes written.
func writeLayerTar(ctx context.Context, dir string, w io.Writer) (int64, error) {
	entries, err := collectEntries(ctx, dir)
	if err != nil {
		return 0, err
	}
	cw := &countingWriter{w: w}
	tw := tar.NewWriter(cw)
	links := map[uint64]string{}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return cw.n, err
		}
		if err := writeEntry(tw, e, links); err != nil {
			return cw.n, err
		}
	}
	if err := tw.Close(); err != nil {
		return cw.n, fmt.Errorf("write layer tar of %s: %w", dir, err)
	}
	return cw.n, nil
}

// collectEntries lists every entry below dir, sorted.
func collectEntries(ctx context.Context, dir string) ([]tarEntry, error) {
	var entries []tarEntry
	var walk func(rel string) error
	walk = func(rel string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		names, err := readDirNames(filepath.Join(dir, rel))
		if err != nil {
			return err
		}
		for _, name := range names {
			child := path.Join(rel, name)
			e, ok, err := newTarEntry(dir, child)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			entries = append(entries, e...)
			if e[0].st.Mode&unix.S_IFMT == unix.S_IFDIR {
				if err := walk(child); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(""); err != nil {
		return nil, err
	}
	slices.SortFunc(entries, func(a, b tarEntry) int { return strings.Compare(a.key, b.key) })
	return entries, nil
}

// newTarEntry describes the entry at rel; a directory yields a second entry
// for its opaque marker. Sockets are skipped (ok is false).
func newTarEntry(dir, rel string) ([]tarEntry, bool, error) {
	src := filepath.Join(dir, rel)
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return nil, false, fmt.Errorf("stat %s: %w", src, err)
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFSOCK:
		return nil, false, nil
	case isWhiteout(&st):
		d, base := path.Split(rel)
		name := d + whiteoutPrefix + base
		return []tarEntry{{key: name, name: name, kind: kindWhiteout}}, true, nil
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return []tarEntry{{key: rel, name: rel, src: src, st: st}}, true, nil
	}
	out := []tarEntry{{key: rel, name: rel + "/", src: src, st: st}}
	opaque, err := isOpaque(src)
	if err != nil {
		return nil, false, err
	}
	if opaque {
		name := rel + "/" + opaqueMarker
		out = append(out, tarEntry{key: rel + "/\x00", name: name, kind: kindOpaque})
	}
	return out, true, nil
}

func writeEntry(tw *tar.Writer, e tarEntry, links map[uint64]string) error {
	if e.kind != kindFile {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write tar entry %s: %w", e.name, err)
		}
		return nil
	}
	hdr, err := tarHeader(e, links)
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write tar entry %s: %w", e.name, err)
	}
	if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
		return nil
	}
	return copyContent(tw, e.src, hdr.Size)
}

func tarHeader(e tarEntry, links map[uint64]string) (*tar.Header, error) {
	hdr := &tar.Header{
		Name:    e.name,
		Mode:    int64(e.st.Mode & 0o7777),
		Uid:     int(e.st.Uid),
		Gid:     int(e.st.Gid),
		ModTime: time.Unix(e.st.Mtim.Sec, 0),
		Format:  tar.FormatPAX,
	}
	xattrs, err := layerXattrs(e.src)
	if err != nil {
		return nil, err
	}
	var standIn string
	for _, x := range xattrs {
		if x.name == overrideXattr {
			standIn = x.value // what the entry really is (override.go)
			continue
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+x.name] = x.value
	}
	switch e.st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = e.st.Size
		if e.st.Nlink > 1 {
			if first, ok := links[e.st.Ino]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				links[e.st.Ino] = e.name
			}
		}
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
	case unix.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		target, err := os.Readlink(e.src)
		if err != nil {
			return nil, fmt.Errorf("read link %s: %w", e.src, err)
		}
		hdr.Linkname = target
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if e.st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(e.st.Rdev)), int64(unix.Minor(e.st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return nil, fmt.Errorf("serialize %s: unsupported file type %#o", e.src, e.st.Mode&unix.S_IFMT)
	}
	if standIn != "" {
		return overrideHeader(hdr, standIn)
	}
	return hdr, nil
}

func copyContent(w io.Writer, src string, size int64) error {
	f, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer f.Close()
	n, err := io.CopyN(w, f, size)
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s: file shrank to %d of %d bytes while serializing", src, n, size)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	return nil
}

type xattr struct{ name, value string }

// layerXattrs returns the extended attributes of p that belong in a layer,
// sorted by name: security.capability and user.* except user.overlay.*.
func layerXattrs(p string) ([]xattr, error) {
	names, err := listXattrs(p)
	if err != nil {
		return nil, err
	}
	var out []xattr
	for _, name := range names {
		if !keepXattr(name) {
			continue
		}
		v, err := getXattr(p, name)
		if err != nil {
			return nil, err
		}
		out = append(out, xattr{name, string(v)})
	}
	slices.SortFunc(out, func(a, b xattr) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

func keepXattr(name string) bool {
	if name == "security.capability" {
		return true
	}
	return strings.HasPrefix(name, "user.") && !strings.HasPrefix(name, "user.overlay.")
}

func listXattrs(p string) ([]string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			size, err := unix.Llistxattr(p, nil)
			if err != nil {
				return nil, fmt.Errorf("list xattrs of %s: %w", p, err)
			}
			buf = make([]byte, size+64)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs of %s: %w", p, err)
		}
		var names []string
		for _, name := range strings.Split(string(buf[:n]), "\x00") {
			if name != "" {
				names = append(names, name)
			}
		}
		return names, nil
	}
}

// getXattr returns the value of xattr name of p, or nil when it is absent.
func getXattr(p, name string) ([]byte, error) {
	buf := make([]byte, 128)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		switch {
		case errors.Is(err, unix.ERANGE):
			size, err := unix.Lgetxattr(p, name, nil)
			if err != nil {
				return nil, fmt.Errorf("get xattr %s of %s: %w", name, p, err)
			}
			buf = make([]byte, size+64)
			continue
		case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("get xattr %s of %s: %w", name, p, err)
		}
		return buf[:n], nil
	}
}

func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

func isOpaque(p string) (bool, error) {
	for _, name := range []string{opaqueXattr, userOpaque} {
		v, err := getXattr(p, name)
		if err != nil {
			return false, err
		}
		if string(v) == "y" {
			return true, nil
		}
	}
	return false, nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", dir, err)
	}
	slices.Sort(names)
	return names, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
