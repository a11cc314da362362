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

// tarEntry is one entry of a layer tar before it is written.
type tarEntry struct {
	// key orders a layer's entries (walkKey): depth first, each
	// directory's entries by name, a whiteout where the entry it deletes
	// would be, an opaque marker first inside its directory (appliers see
	// it before any new child).
	key  string
	name string // name inside the tar; directories end in "/"
	src  string // absolute path in the layer directory; "" for markers
	st   unix.Stat_t
	kind entryKind
	// noXattrs: the walk that listed the entry found none of the xattrs
	// a layer keeps, so serializing it need not list them again.
	noXattrs bool
}

type entryKind int

const (
	kindFile entryKind = iota
	kindWhiteout
	kindOpaque
)

// writeLayerTar serializes the upper-format directory dir as a layer tar:
// PAX format, entries in walkKey order, mtimes in whole seconds, no atime,
// ctime, uname or gname. It returns the number of bytes written. When w is
// a FileRangeWriter, the contents of files of rangeMin bytes or more go to
// it as file ranges (no copy through user space).
func writeLayerTar(ctx context.Context, dir string, w io.Writer) (int64, error) {
	entries, err := collectEntries(ctx, dir)
	if err != nil {
		return 0, err
	}
	return writeEntriesTar(ctx, dir, entries, w, tarFormat{keep: keepXattr})
}

// tarFormat is how a layer's entries are serialized.
type tarFormat struct {
	// keep selects the xattrs the tar holds: keepXattr, or the rule of
	// the builder that committed the layer (layerMetadata.format).
	keep func(string) bool
	// windows, when set, makes the tar a Windows layer (windows.go)
	// whose Hives and Files entries have this time.
	windows *time.Time
}

// writeEntriesTar is writeLayerTar of the entries collectEntries found
// in dir, in format f.
func writeEntriesTar(ctx context.Context, dir string, entries []tarEntry, w io.Writer, f tarFormat) (int64, error) {
	out := &tarOut{w: w, windows: f.windows != nil}
	out.fr, _ = w.(FileRangeWriter)
	if f.windows != nil {
		if err := windowsLeaders(out, *f.windows); err != nil {
			return out.n, err
		}
	}
	pf := newTarPrefetcher(ctx, entries, out.fr != nil, f.keep)
	defer pf.stop()
	links := map[uint64]string{}
	for i, e := range entries {
		if err := ctx.Err(); err != nil {
			return out.n, err
		}
		got, err := pf.get(ctx, i)
		if err != nil {
			return out.n, err
		}
		if err := writeEntry(out, e, got, links); err != nil {
			return out.n, err
		}
		pf.release(i)
	}
	if err := out.end(); err != nil {
		return out.n, fmt.Errorf("write layer tar of %s: %w", dir, err)
	}
	return out.n, nil
}

// FileRangeWriter is a writer that also takes the bytes of a file range
// without them passing through user space (copy_file_range(2) into a file,
// sendfile(2) into a socket). WriteTar gives it the contents of a layer's
// larger files that way.
type FileRangeWriter interface {
	io.Writer
	// WriteFileRange writes the n bytes of f at offset off and returns how
	// many it wrote: fewer than n only with an error, or when f ends
	// first. f is only used during the call.
	WriteFileRange(f *os.File, off, n int64) (int64, error)
}

// rangeMin is the smallest file whose content goes to a FileRangeWriter as
// a range: below it, a system call per file costs more than the copy.
const rangeMin = 64 << 10

// tarOut writes a tar entry by entry: archive/tar makes the headers (so
// the bytes are exactly tar.Writer's), the contents are written or handed
// over as file ranges, and the padding and end blocks are written here.
type tarOut struct {
	w   io.Writer
	fr  FileRangeWriter // w, when it takes file ranges
	n   int64
	buf []byte // copyContent's buffer, made on first use
	// tw makes the headers; contents that go through it (all but file
	// ranges) let it be reused for the next entry. A tar.Writer a header
	// costs 20 MB of garbage on a 20,000-file layer, written on the
	// commit's one serial goroutine into fresh pages, a fault each.
	tw *tar.Writer
	// windows: every entry goes below Files/ of a Windows layer.
	windows bool
}

func (o *tarOut) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	o.n += int64(n)
	return n, err
}

// header writes hdr's header blocks (PAX records included); the caller
// then writes hdr.Size bytes of content and pads them.
func (o *tarOut) header(hdr *tar.Header) error {
	if o.windows {
		windowsHeader(hdr)
	}
	if o.tw == nil {
		o.tw = tar.NewWriter(o)
	}
	return o.tw.WriteHeader(hdr)
}

// endContent pads the content of size bytes just written: through the
// header writer when it went through it, else here (the writer, which
// did not see the content, is dropped).
func (o *tarOut) endContent(size int64, through bool) error {
	if through {
		return o.tw.Flush()
	}
	o.tw = nil
	return o.pad(size)
}

var zeroBlocks [2 * 512]byte

// pad completes content of size bytes to a whole 512-byte block.
func (o *tarOut) pad(size int64) error {
	_, err := o.Write(zeroBlocks[:(512-size%512)%512])
	return err
}

// end writes the two zero blocks that close a tar.
func (o *tarOut) end() error {
	_, err := o.Write(zeroBlocks[:])
	return err
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
	sortEntries(entries)
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
	opaque := false
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		var err error
		if opaque, err = isOpaque(src); err != nil {
			return nil, false, err
		}
	}
	out, ok := tarEntriesOf(rel, src, &st, opaque)
	return out, ok, nil
}

// tarEntriesOf describes the entry rel at src, of stat st (and, for a
// directory, opaque or not).
func tarEntriesOf(rel, src string, st *unix.Stat_t, opaque bool) ([]tarEntry, bool) {
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFSOCK:
		return nil, false
	case isWhiteout(st):
		d, base := path.Split(rel)
		name := d + whiteoutPrefix + base
		return []tarEntry{{key: walkKey(rel), name: name, kind: kindWhiteout, st: *st}}, true
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return []tarEntry{{key: walkKey(rel), name: rel, src: src, st: *st}}, true
	}
	key := walkKey(rel)
	out := []tarEntry{{key: key, name: rel + "/", src: src, st: *st}}
	if opaque {
		name := rel + "/" + opaqueMarker
		out = append(out, tarEntry{key: key + "\x00", name: name, kind: kindOpaque})
	}
	return out, true
}

// walkKey is the sort key of the entry at rel: rel with '/' made the
// lowest byte, so that sorting by it lists a directory's entries right
// after it and before a sibling whose name extends the directory's
// ("a", "a/f", "a-b", "a.b"), the order of a depth-first walk that takes
// each directory's entries by name — the order of BuildKit's (and
// containerd's) layer tars. An opaque marker's key is its directory's
// plus a 0 byte: right after the directory.
func walkKey(rel string) string { return strings.ReplaceAll(rel, "/", "\x00") }

// A listing is the entries of a layer directory listed by a walk that
// began at at (the commit's prune).
type listing struct {
	at      time.Time
	entries []tarEntry
}

// add lists the entry rel at src, whose xattrs are named xattrs.
func (l *listing) add(rel, src string, st *unix.Stat_t, opaque bool, xattrs []string) {
	out, ok := tarEntriesOf(rel, src, st, opaque)
	if !ok {
		return
	}
	out[0].noXattrs = !slices.ContainsFunc(xattrs, keepXattr)
	if len(l.entries)+len(out) > cap(l.entries) {
		// double: append grows a long list by a quarter, copying it into
		// a fresh array each time, whose new pages cost a fault each
		l.entries = slices.Grow(l.entries, max(len(l.entries), 256))
	}
	l.entries = append(l.entries, out...)
}

// sorted returns the entries in collectEntries' order.
func (l *listing) sorted() []tarEntry {
	sortEntries(l.entries)
	return l.entries
}

func sortEntries(entries []tarEntry) {
	slices.SortFunc(entries, func(a, b tarEntry) int { return strings.Compare(a.key, b.key) })
}

// sortPathOrder sorts entries in the order of the layers builder
// committed before walkKey (layerMetadata.Order ""): by the entry's path
// as a string, a whiteout by its own name (".wh.x", before its siblings),
// an opaque marker right after its directory.
func sortPathOrder(entries []tarEntry) {
	for i := range entries {
		e := &entries[i]
		switch e.kind {
		case kindWhiteout:
			e.key = e.name
		case kindOpaque:
			e.key = strings.TrimSuffix(e.name, opaqueMarker) + "\x00"
		default:
			e.key = strings.TrimSuffix(e.name, "/")
		}
	}
	sortEntries(entries)
}

// writeEntry writes entry e, whose xattrs, link target and (a small
// file's) content the prefetcher read as got.
func writeEntry(out *tarOut, e tarEntry, got *prefetchSlot, links map[uint64]string) error {
	if e.kind != kindFile {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := out.header(hdr); err != nil {
			return fmt.Errorf("write tar entry %s: %w", e.name, err)
		}
		return nil
	}
	hdr, err := tarHeader(e, got, links)
	if err != nil {
		return err
	}
	if err := out.header(hdr); err != nil {
		return fmt.Errorf("write tar entry %s: %w", e.name, err)
	}
	if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
		return nil
	}
	through := true
	if int64(len(got.data)) == hdr.Size {
		if _, err := out.tw.Write(got.data); err != nil {
			return fmt.Errorf("write tar entry %s: %w", e.name, err)
		}
	} else if through, err = copyContent(out, e.src, hdr.Size); err != nil {
		return err
	}
	if err := out.endContent(hdr.Size, through); err != nil {
		return fmt.Errorf("write tar entry %s: %w", e.name, err)
	}
	return nil
}

func tarHeader(e tarEntry, got *prefetchSlot, links map[uint64]string) (*tar.Header, error) {
	hdr := &tar.Header{
		Name:    e.name,
		Mode:    int64(e.st.Mode & 0o7777),
		Uid:     int(e.st.Uid),
		Gid:     int(e.st.Gid),
		ModTime: time.Unix(e.st.Mtim.Sec, 0),
		Format:  tar.FormatPAX,
	}
	var standIn string
	for _, x := range got.xattrs {
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
		hdr.Linkname = got.link
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

// copyContent writes the first size bytes of the file src to out: as a
// file range when out takes them and the file is large enough, else
// through out's header writer (through).
func copyContent(out *tarOut, src string, size int64) (through bool, err error) {
	f, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", src, err)
	}
	defer f.Close()
	var n int64
	if out.fr != nil && size >= rangeMin {
		n, err = out.fr.WriteFileRange(f, 0, size)
		out.n += n
		if err == nil && n < size {
			err = io.EOF
		}
	} else {
		through = true
		if out.buf == nil {
			out.buf = make([]byte, 256<<10)
		}
		n, err = io.CopyBuffer(out.tw, io.LimitReader(f, size), out.buf)
		if err == nil && n < size {
			err = io.EOF
		}
	}
	if errors.Is(err, io.EOF) {
		return through, fmt.Errorf("read %s: file shrank to %d of %d bytes while serializing", src, n, size)
	}
	if err != nil {
		return through, fmt.Errorf("read %s: %w", src, err)
	}
	return through, nil
}

type xattr struct{ name, value string }

// layerXattrs returns the extended attributes of p that belong in a layer,
// sorted by name: security.capability alone, as the layers of BuildKit and
// Docker hold (containerd's and moby's tar writers read no other), plus a
// stand-in's record, which the writer turns back into what it stands for.
func layerXattrs(p string) ([]xattr, error) { return xattrsOf(p, keepXattr) }

// snapshotXattrs returns the extended attributes of p that a copy of a
// snapshot keeps, sorted by name: the layer's and every user.* one but
// overlayfs' own (user.overlay.*).
func snapshotXattrs(p string) ([]xattr, error) { return xattrsOf(p, snapshotXattr) }

func xattrsOf(p string, keep func(string) bool) ([]xattr, error) {
	names, err := listXattrs(p)
	if err != nil {
		return nil, err
	}
	var out []xattr
	for _, name := range names {
		if !keep(name) {
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
	return name == "security.capability" || name == overrideXattr
}

func snapshotXattr(name string) bool {
	return keepXattr(name) || strings.HasPrefix(name, "user.") && !strings.HasPrefix(name, "user.overlay.")
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
