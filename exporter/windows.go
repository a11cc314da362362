package exporter

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// WindowsFiles is img, a Windows image whose layers which[i] are in the
// Windows layer format (a base image's, and those of the steps on it), as
// its files: such a layer's entries below Files/, moved to the root, as
// BuildKit unpacks them on Linux, so that a local or tar output of the
// image, and a scan of its files, hold the files BuildKit's do (not
// Hives/ or UtilityVM/). Each such layer's stream is still checked
// against its diffID. Only its layers' contents differ from img's; it is
// not an image to push or save.
func WindowsFiles(img v1.Image, which []bool) v1.Image {
	return &windowsFilesImage{Image: img, which: which}
}

type windowsFilesImage struct {
	v1.Image
	which []bool
}

func (w *windowsFilesImage) Layers() ([]v1.Layer, error) {
	ls, err := w.Image.Layers()
	if err != nil {
		return nil, err
	}
	if len(ls) != len(w.which) {
		return nil, fmt.Errorf("image has %d layers, %d said to be or not be Windows layers", len(ls), len(w.which))
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = l
		if w.which[i] {
			out[i] = &windowsFilesLayer{Layer: l}
		}
	}
	return out, nil
}

// windowsFilesLayer is a layer of a WindowsFiles image.
type windowsFilesLayer struct{ v1.Layer }

// Uncompressed is the layer's Files/ entries, moved to the root, without
// the Windows attributes (the type bits of modes, the MSWINDOWS.* and
// LIBARCHIVE.* records); a damaged layer fails the stream at its end.
func (l *windowsFilesLayer) Uncompressed() (io.ReadCloser, error) {
	diffID, err := l.Layer.DiffID()
	if err != nil {
		return nil, err
	}
	rc, err := l.Layer.Uncompressed()
	if err != nil {
		return nil, err
	}
	src := newVerifyReader(rc, diffID, -1, "layer "+diffID.String())
	pr, pw := io.Pipe()
	go func() {
		err := filterWindowsFiles(src, pw)
		if cerr := src.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
	}()
	return &pipeReadCloser{PipeReader: pr}, nil
}

// verified: the stream is checked against the layer's diffID already
// (WriteLocal need not again, and cannot: it is not the diffID's tar).
func (l *windowsFilesLayer) verified() {}

type pipeReadCloser struct{ *io.PipeReader }

// Close stops the filter, which may be blocked writing.
func (p *pipeReadCloser) Close() error {
	return p.PipeReader.CloseWithError(errors.New("layer reader closed"))
}

// filterWindowsFiles copies the tar r to w with only its entries below
// Files/, moved to the root, then reads r to its end (where it is
// checked).
func filterWindowsFiles(r io.Reader, w io.Writer) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		name, ok := strings.CutPrefix(hdr.Name, "Files/")
		if !ok || name == "" {
			continue
		}
		hdr.Name = name
		hdr.Linkname = strings.TrimPrefix(hdr.Linkname, "Files/")
		hdr.Mode &= 0o7777
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, "MSWINDOWS.") || strings.HasPrefix(k, "LIBARCHIVE.") {
				delete(hdr.PAXRecords, k)
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, r)
	return err
}
