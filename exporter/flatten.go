package exporter

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The whiteout names of layer tars (the OCI image spec's).
const (
	whiteoutPrefix = ".wh."
	opaqueWhiteout = ".wh..wh..opq"
)

// Flatten returns img's root filesystem as one tar (a type=tar output):
// relative names, directories' ending in "/", each path once, from the topmost layer that has it, whiteouts and
// opaque directories applied, the layers read top down as
// go-containerregistry's mutate.Extract reads them. Unlike mutate.Extract,
// a hardlink whose target an upper layer replaced or removed keeps the
// content it had in its own layer, as in the file system an unpack of the
// layers makes (the link keeps the old inode; BuildKit's tar output is
// that file system): the first such link is written as a regular file,
// the others of the same target as hardlinks to it.
func Flatten(img v1.Image) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(flatten(img, pw))
	}()
	return pr
}

func flatten(img v1.Image, w io.Writer) error {
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("flatten: %w", err)
	}
	f := &flattener{tw: tar.NewWriter(w), seen: map[string]bool{}, opaque: map[string]bool{}}
	for i := len(layers) - 1; i >= 0; i-- {
		if err := f.layer(layers[i]); err != nil {
			return fmt.Errorf("flatten: layer %d: %w", i, err)
		}
	}
	return f.tw.Close()
}

type flattener struct {
	tw *tar.Writer
	// seen: the paths written or removed by an upper layer; true for
	// those whose children lower layers cannot add (removed, or not a
	// directory).
	seen map[string]bool
	// opaque: the directories an upper layer made opaque.
	opaque map[string]bool
}

// layer writes the entries of l that upper layers left visible.
func (f *flattener) layer(l v1.Layer) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	// Whiteouts and opaque markers hide what lower layers have, not
	// this layer's entries: applied once it is read.
	layerOpaque, layerGone := map[string]bool{}, map[string]bool{}
	// hidden: the regular files of this layer an upper one replaced;
	// orphans: this layer's visible hardlinks to them, by target.
	hidden := map[string]bool{}
	orphans := map[string][]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		name, err := flatName(hdr.Name)
		if err != nil {
			return err
		}
		hdr.Name, hdr.Format = name, tar.FormatPAX
		dir, base := path.Split(name)
		dir = path.Clean(dir)
		if base == opaqueWhiteout {
			layerOpaque[dir] = true
			continue
		}
		tombstone := strings.HasPrefix(base, whiteoutPrefix)
		if tombstone {
			name = path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))
		}
		if _, ok := f.seen[name]; ok || f.under(name) {
			if hdr.Typeflag == tar.TypeReg && !tombstone {
				hidden[name] = true
			}
			continue
		}
		if tombstone {
			layerGone[name] = true
			continue
		}
		f.seen[name] = hdr.Typeflag != tar.TypeDir
		if hdr.Typeflag == tar.TypeDir && name != "." {
			hdr.Name += "/" // as BuildKit's tar output names directories
		}
		if hdr.Typeflag == tar.TypeLink {
			target, err := flatName(hdr.Linkname)
			if err != nil {
				return err
			}
			if hidden[target] {
				orphans[target] = append(orphans[target], hdr)
				continue
			}
		}
		if err := f.tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(f.tw, tr); err != nil {
			return err
		}
	}
	// Read to the end, where a verifying reader checks the layer.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return err
	}
	for d := range layerOpaque {
		f.opaque[d] = true
	}
	for n := range layerGone {
		f.seen[n] = true
	}
	if len(orphans) == 0 {
		return nil
	}
	return f.orphans(l, orphans)
}

// orphans writes hardlinks whose target an upper layer replaced: the
// first of each target as a regular file with the target's content in
// layer l, read again.
func (f *flattener) orphans(l v1.Layer, orphans map[string][]*tar.Header) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for len(orphans) > 0 {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("hardlink targets %v missing on a second read", orphans)
		}
		if err != nil {
			return err
		}
		name, err := flatName(hdr.Name)
		if err != nil {
			return err
		}
		links, ok := orphans[name]
		if !ok || hdr.Typeflag != tar.TypeReg {
			continue
		}
		delete(orphans, name)
		first := *links[0]
		first.Typeflag, first.Linkname, first.Size = tar.TypeReg, "", hdr.Size
		if err := f.tw.WriteHeader(&first); err != nil {
			return err
		}
		if _, err := io.Copy(f.tw, tr); err != nil {
			return err
		}
		for _, h := range links[1:] {
			h.Linkname = first.Name
			if err := f.tw.WriteHeader(h); err != nil {
				return err
			}
		}
	}
	return nil
}

// under reports whether a parent of name is removed, not a directory, or
// opaque in an upper layer.
func (f *flattener) under(name string) bool {
	for p := path.Dir(name); p != "." && p != "/"; p = path.Dir(p) {
		if f.seen[p] || f.opaque[p] {
			return true
		}
	}
	return false
}

// flatName is an entry name as the flattened tar writes it: relative,
// cleaned; a name that climbs out of the root is an error.
func flatName(name string) (string, error) {
	clean := path.Clean(strings.TrimLeft(name, "/"))
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("entry %q climbs out of the root", name)
	}
	return clean, nil
}
