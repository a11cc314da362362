package exporter

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// maxLinkHops bounds symlink resolution inside an archive.
const maxLinkHops = 40

// maxJSONSize bounds the JSON documents read from an archive.
const maxJSONSize = 32 << 20

// tarIndex maps the names in a tar file to the offsets of their content, so
// any member can be opened without scanning the archive again. It holds no
// open file; each open reopens path.
type tarIndex struct {
	path    string
	entries map[string]tarEntry
}

type tarEntry struct {
	typ  byte
	off  int64
	size int64
	link string // symlink target, or hardlink target name
}

// indexTar scans the tar at path. Names are cleaned; a name that escapes the
// archive root is an error.
func indexTar(path string) (*tarIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	ix := &tarIndex{path: path, entries: map[string]tarEntry{}}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read tar: %w", err)
		}
		if err := ix.add(f, hdr, st.Size()); err != nil {
			return nil, err
		}
	}
	if len(ix.entries) == 0 {
		return nil, errors.New("empty archive")
	}
	return ix, nil
}

func (ix *tarIndex) add(f *os.File, hdr *tar.Header, fileSize int64) error {
	name, err := cleanMember(hdr.Name)
	if err != nil {
		return err
	}
	e := tarEntry{typ: hdr.Typeflag, size: hdr.Size}
	switch hdr.Typeflag {
	case tar.TypeReg:
		if e.off, err = f.Seek(0, io.SeekCurrent); err != nil {
			return err
		}
		if e.off+e.size > fileSize {
			return fmt.Errorf("entry %q: truncated archive", hdr.Name)
		}
	case tar.TypeSymlink:
		e.link = hdr.Linkname
	case tar.TypeLink:
		if e.link, err = cleanMember(hdr.Linkname); err != nil {
			return fmt.Errorf("hardlink %q: %w", hdr.Name, err)
		}
	default:
		return nil
	}
	ix.entries[name] = e
	return nil
}

// cleanMember cleans an archive member name; names leaving the archive root
// ("../x", "a/../../x") are refused.
func cleanMember(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("entry %q: absolute path escapes the archive", name)
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("entry %q: path escapes the archive", name)
	}
	return c, nil
}

// resolve follows symlinks and hardlinks from name to a regular entry.
func (ix *tarIndex) resolve(name string) (tarEntry, error) {
	cur, err := cleanMember(name)
	if err != nil {
		return tarEntry{}, err
	}
	for range maxLinkHops {
		e, ok := ix.entries[cur]
		if !ok {
			return tarEntry{}, fmt.Errorf("%s: not found in archive", name)
		}
		switch e.typ {
		case tar.TypeReg:
			return e, nil
		case tar.TypeLink:
			cur = e.link
		case tar.TypeSymlink:
			if cur, err = linkTarget(cur, e.link); err != nil {
				return tarEntry{}, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return tarEntry{}, fmt.Errorf("%s: symlink cycle or too many links in archive", name)
}

func linkTarget(from, target string) (string, error) {
	if path.IsAbs(target) {
		return "", fmt.Errorf("symlink %q -> %q escapes the archive", from, target)
	}
	c, err := cleanMember(path.Join(path.Dir(from), target))
	if err != nil {
		return "", fmt.Errorf("symlink %q -> %q escapes the archive", from, target)
	}
	return c, nil
}

// has reports whether the archive holds an entry name (of any type).
func (ix *tarIndex) has(name string) bool {
	_, ok := ix.entries[name]
	return ok
}

// open returns the content of the member name.
func (ix *tarIndex) open(name string) (io.ReadCloser, int64, error) {
	e, err := ix.resolve(name)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(ix.path)
	if err != nil {
		return nil, 0, err
	}
	return sectionReadCloser{io.NewSectionReader(f, e.off, e.size), f}, e.size, nil
}

// readAll reads a member of at most limit bytes.
func (ix *tarIndex) readAll(name string, limit int64) ([]byte, error) {
	rc, size, err := ix.open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > limit {
		return nil, fmt.Errorf("%s: %d bytes exceeds the limit of %d", name, size, limit)
	}
	return io.ReadAll(rc)
}

type sectionReadCloser struct {
	*io.SectionReader
	f *os.File
}

func (s sectionReadCloser) Close() error { return s.f.Close() }
