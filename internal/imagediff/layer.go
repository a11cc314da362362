// Package imagediff compares two images, layer by layer, file by file,
// and two builds, step by step: what a user runs when two builds of "the
// same" code differ.
package imagediff

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Entry is one tar entry of a layer, as far as it matters for the image:
// everything but the names of the owner.
type Entry struct {
	Path    string    `json:"path"`
	Type    string    `json:"type"` // file, dir, symlink, hardlink, char, block, fifo, whiteout, opaque
	Mode    uint32    `json:"mode"` // permission bits with setuid, setgid, sticky
	UID     int       `json:"uid"`
	GID     int       `json:"gid"`
	Size    int64     `json:"size"`
	Digest  string    `json:"digest,omitempty"` // sha256 of a file's content
	Link    string    `json:"link,omitempty"`   // symlink or hardlink target
	ModTime time.Time `json:"mtime"`
	Xattrs  string    `json:"xattrs,omitempty"` // name=value pairs, sorted
	Device  string    `json:"device,omitempty"` // major:minor of char and block devices
}

// ReadLayer reads a layer tar into its entries by path ("/etc/passwd").
// A whiteout ".wh.NAME" is the entry NAME of type whiteout; an opaque
// marker is the directory's entry ".wh..wh..opq" of type opaque.
func ReadLayer(ctx context.Context, r io.Reader) (map[string]Entry, error) {
	tr := tar.NewReader(r)
	out := map[string]Entry{}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read layer: %w", err)
		}
		e, err := entryOf(hdr, tr)
		if err != nil {
			return nil, fmt.Errorf("read layer: %s: %w", hdr.Name, err)
		}
		out[e.Path] = e
	}
}

func entryOf(hdr *tar.Header, r io.Reader) (Entry, error) {
	p := cleanPath(hdr.Name)
	e := Entry{Path: p, Mode: uint32(hdr.Mode) & 0o7777, UID: hdr.Uid, GID: hdr.Gid, ModTime: hdr.ModTime.UTC()}
	dir, base := path.Split(p)
	switch {
	case base == ".wh..wh..opq":
		e.Type = "opaque"
		return e, nil
	case strings.HasPrefix(base, ".wh."):
		e.Path, e.Type = path.Join(dir, strings.TrimPrefix(base, ".wh.")), "whiteout"
		return e, nil
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
		e.Type, e.Size = "file", hdr.Size
		h := sha256.New()
		if _, err := io.Copy(h, r); err != nil {
			return e, err
		}
		e.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	case tar.TypeDir:
		e.Type = "dir"
	case tar.TypeSymlink:
		e.Type, e.Link = "symlink", hdr.Linkname
	case tar.TypeLink:
		e.Type, e.Link = "hardlink", cleanPath(hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock:
		e.Type = map[byte]string{tar.TypeChar: "char", tar.TypeBlock: "block"}[hdr.Typeflag]
		e.Device = fmt.Sprintf("%d:%d", hdr.Devmajor, hdr.Devminor)
	case tar.TypeFifo:
		e.Type = "fifo"
	default:
		e.Type = "type " + strconv.Quote(string(hdr.Typeflag))
	}
	var xs []string
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			xs = append(xs, name+"="+strconv.Quote(v))
		}
	}
	sort.Strings(xs)
	e.Xattrs = strings.Join(xs, " ")
	return e, nil
}

// cleanPath turns a tar name ("./a/b/", "a/b") into "/a/b".
func cleanPath(name string) string {
	return path.Clean("/" + strings.TrimPrefix(name, "./"))
}

// FileChange is a path that differs between two layers.
type FileChange struct {
	Path   string        `json:"path"`
	Change string        `json:"change"` // added, removed or changed
	Type   string        `json:"type"`   // the entry's type (B's, or A's when removed)
	Fields []FieldChange `json:"fields,omitempty"`
	A      *Entry        `json:"a,omitempty"`
	B      *Entry        `json:"b,omitempty"`
}

// FieldChange is one field that differs, with its value in A and in B.
type FieldChange struct {
	Field string `json:"field"`
	A     string `json:"a"`
	B     string `json:"b"`
}

// DiffEntries compares the entries of two layers, by path.
func DiffEntries(a, b map[string]Entry) []FileChange {
	var out []FileChange
	for p, ea := range a {
		eb, ok := b[p]
		switch {
		case !ok:
			ea := ea
			out = append(out, FileChange{Path: p, Change: "removed", Type: ea.Type, A: &ea})
		default:
			if fs := diffEntry(ea, eb); len(fs) > 0 {
				ea, eb := ea, eb
				out = append(out, FileChange{Path: p, Change: "changed", Type: eb.Type, Fields: fs, A: &ea, B: &eb})
			}
		}
	}
	for p, eb := range b {
		if _, ok := a[p]; !ok {
			eb := eb
			out = append(out, FileChange{Path: p, Change: "added", Type: eb.Type, B: &eb})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// diffEntry lists the fields of two entries of the same path that differ.
func diffEntry(a, b Entry) []FieldChange {
	var out []FieldChange
	add := func(field, x, y string) {
		if x != y {
			out = append(out, FieldChange{Field: field, A: x, B: y})
		}
	}
	add("type", a.Type, b.Type)
	add("mode", fmt.Sprintf("%04o", a.Mode), fmt.Sprintf("%04o", b.Mode))
	add("owner", fmt.Sprintf("%d:%d", a.UID, a.GID), fmt.Sprintf("%d:%d", b.UID, b.GID))
	add("size", strconv.FormatInt(a.Size, 10), strconv.FormatInt(b.Size, 10))
	add("digest", a.Digest, b.Digest)
	add("link", a.Link, b.Link)
	add("device", a.Device, b.Device)
	add("xattrs", a.Xattrs, b.Xattrs)
	add("mtime", a.ModTime.Format(time.RFC3339Nano), b.ModTime.Format(time.RFC3339Nano))
	return out
}
