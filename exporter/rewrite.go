package exporter

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// RewrittenTimestampAnnotation marks a layer whose file times the exporter
// clamped to the epoch (rewrite-timestamp=true), with the epoch in seconds,
// as BuildKit's image exporter annotates it.
const RewrittenTimestampAnnotation = "buildkit/rewritten-timestamp"

// Epoch is how an output applies SOURCE_DATE_EPOCH, as BuildKit's image
// exporters do: Time clamps the times of the history entries after those
// the image shares with its base image (whose times stay, buildkit#4614),
// the config's created time becoming the last entry's, and with Rewrite
// the file times of every layer after those the image shares with its
// base image, which are then annotated (RewrittenTimestampAnnotation).
// Base lists the base image's diffIDs, BaseHistory its history.
type Epoch struct {
	Time        *time.Time
	Rewrite     bool
	Base        []v1.Hash
	BaseHistory []v1.History
	// TempDir holds rewritten layers until the output is written.
	TempDir string
}

// Created is when an archive written with e says its images were made
// (Tagged.Created): the epoch, else now.
func (e Epoch) Created() time.Time {
	if e.Time != nil {
		return e.Time.UTC()
	}
	return time.Now().UTC()
}

// Apply returns img as the output with e writes it.
func (e Epoch) Apply(img v1.Image) (v1.Image, error) {
	if e.Time == nil {
		return img, nil
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	if e.Rewrite {
		if layers, err = e.rewriteLayers(layers); err != nil {
			return nil, err
		}
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	if raw, err = clampConfig(raw, layers, e.BaseHistory, *e.Time); err != nil {
		return nil, err
	}
	return rebuilt(img, raw, types.OCIConfigJSON, layers)
}

// rewriteLayers rewrites the layers after the leading ones equal to the
// base image's.
func (e Epoch) rewriteLayers(layers []v1.Layer) ([]v1.Layer, error) {
	out := make([]v1.Layer, len(layers))
	diverged := false
	for i, l := range layers {
		d, err := l.DiffID()
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if !diverged && i < len(e.Base) && e.Base[i] == d {
			out[i] = l // the base image's: immutable
			continue
		}
		diverged = true
		if out[i], err = e.rewriteLayer(l); err != nil {
			return nil, fmt.Errorf("rewrite layer %d (%s) to the epoch: %w", i, d, err)
		}
	}
	return out, nil
}

// rewriteLayer clamps the times of l's entries to the epoch; a layer with
// none after it keeps its bytes and only gains the annotation.
func (e Epoch) rewriteLayer(l v1.Layer) (v1.Layer, error) {
	ann := map[string]string{RewrittenTimestampAnnotation: strconv.FormatInt(e.Time.Unix(), 10)}
	newer, err := hasNewer(l, *e.Time)
	if err != nil {
		return nil, err
	}
	if !newer {
		return &annotatedLayer{Layer: l, ann: ann}, nil
	}
	f, err := os.CreateTemp(e.TempDir, "rewritten-*.tar")
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	size, err := clampTar(l, io.MultiWriter(f, h), *e.Time)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	return &annotatedLayer{Layer: &tarFileLayer{file: f.Name(), diffID: d, size: size}, ann: ann}, nil
}

// hasNewer reports whether an entry of l has a time after epoch.
func hasNewer(l v1.Layer, epoch time.Time) (bool, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return false, err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if hdr.ModTime.After(epoch) || hdr.AccessTime.After(epoch) || hdr.ChangeTime.After(epoch) {
			return true, nil
		}
	}
}

// clampTar copies l's tar to w with every time after epoch set to epoch.
func clampTar(l v1.Layer, w io.Writer, epoch time.Time) (int64, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	cw := &countWriter{w: w}
	tr, tw := tar.NewReader(rc), tar.NewWriter(cw)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		for _, t := range []*time.Time{&hdr.ModTime, &hdr.AccessTime, &hdr.ChangeTime} {
			if t.After(epoch) {
				*t = epoch
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return 0, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	return cw.n, nil
}

// clampConfig sets the config's rootfs to layers' diffIDs and applies
// epoch to its times as BuildKit's exporter does: the history entries
// after the leading ones equal to base's keep their time only when it is
// not after epoch, and the config's created time is the last entry's
// (clamped to epoch when the config has no history).
func clampConfig(raw []byte, layers []v1.Layer, base []v1.History, epoch time.Time) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	diffIDs := make([]v1.Hash, len(layers))
	for i, l := range layers {
		d, err := l.DiffID()
		if err != nil {
			return nil, err
		}
		diffIDs[i] = d
	}
	rootfs, err := json.Marshal(struct {
		Type    string    `json:"type"`
		DiffIDs []v1.Hash `json:"diff_ids"`
	}{"layers", diffIDs})
	if err != nil {
		return nil, err
	}
	m["rootfs"] = rootfs
	var last *time.Time // the last history entry's time
	if h, ok := m["history"]; ok {
		// Decoded and encoded as BuildKit's exporter does (its fields in
		// image-spec's order), so that equal histories are equal bytes.
		var hist []ocispec.History
		if err := json.Unmarshal(h, &hist); err != nil {
			return nil, fmt.Errorf("decode history: %w", err)
		}
		diverged := false
		for i := range hist {
			e := &hist[i]
			if !diverged && i < len(base) && sameHistory(*e, base[i]) {
				if e.Created != nil {
					last = e.Created
				}
				continue
			}
			diverged = true
			if e.Created == nil || e.Created.After(epoch) {
				t := epoch
				e.Created = &t
			}
			last = e.Created
		}
		if m["history"], err = json.Marshal(hist); err != nil {
			return nil, err
		}
	}
	switch c, ok := m["created"]; {
	case last != nil:
		m["created"], _ = json.Marshal(last)
	case ok:
		var t time.Time
		if json.Unmarshal(c, &t) == nil && t.After(epoch) {
			m["created"], _ = json.Marshal(epoch)
		}
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if bytes.Equal(out, raw) {
		return raw, nil
	}
	return out, nil
}

// sameHistory reports whether the config's history entry e is the base
// image's entry b (equal fields; times equal as instants).
func sameHistory(e ocispec.History, b v1.History) bool {
	var created time.Time
	if e.Created != nil {
		created = *e.Created
	}
	return e.Author == b.Author && e.CreatedBy == b.CreatedBy && e.Comment == b.Comment &&
		e.EmptyLayer == b.EmptyLayer && created.Equal(b.Created.Time)
}

// annotatedLayer is a layer whose manifest descriptor carries annotations.
type annotatedLayer struct {
	v1.Layer
	ann map[string]string
}

func (a *annotatedLayer) Annotations() map[string]string { return a.ann }

// tarFileLayer is an uncompressed layer in a file.
type tarFileLayer struct {
	file   string
	diffID v1.Hash
	size   int64
}

func (t *tarFileLayer) Digest() (v1.Hash, error)             { return t.diffID, nil }
func (t *tarFileLayer) DiffID() (v1.Hash, error)             { return t.diffID, nil }
func (t *tarFileLayer) Size() (int64, error)                 { return t.size, nil }
func (t *tarFileLayer) MediaType() (types.MediaType, error)  { return types.OCIUncompressedLayer, nil }
func (t *tarFileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(t.file) }
func (t *tarFileLayer) Uncompressed() (io.ReadCloser, error) { return os.Open(t.file) }
