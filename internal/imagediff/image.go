package imagediff

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Layer is one layer to compare: its diffID, the history entry that made
// it, and how to read its uncompressed tar.
type Layer struct {
	DiffID    string
	CreatedBy string
	Open      func() (io.ReadCloser, error)
}

// LayerChange compares a layer of A with the layer of B at the same place.
// Index is 1-based in its image, 0 when the layer is absent there.
type LayerChange struct {
	IndexA    int          `json:"indexA,omitempty"`
	IndexB    int          `json:"indexB,omitempty"`
	CreatedBy string       `json:"createdBy"` // B's, or A's when removed
	DiffIDA   string       `json:"diffIDA,omitempty"`
	DiffIDB   string       `json:"diffIDB,omitempty"`
	Status    string       `json:"status"` // same, changed, added, removed
	Files     []FileChange `json:"files,omitempty"`
}

// ImageDiff is what differs between two images.
type ImageDiff struct {
	DigestA   string        `json:"digestA"`
	DigestB   string        `json:"digestB"`
	Identical bool          `json:"identical"`
	Config    []FieldChange `json:"config,omitempty"`
	Layers    []LayerChange `json:"layers"`
	// Manifest lists the manifest's differences when config and layers
	// are the same (media types, compression).
	Manifest []FieldChange `json:"manifest,omitempty"`
}

// DiffImages compares two images: their configs field by field and their
// layers file by file, the layers aligned by the history entries that
// made them.
func DiffImages(ctx context.Context, a, b v1.Image) (*ImageDiff, error) {
	da, err := a.Digest()
	if err != nil {
		return nil, err
	}
	db, err := b.Digest()
	if err != nil {
		return nil, err
	}
	d := &ImageDiff{DigestA: da.String(), DigestB: db.String(), Identical: da == db}
	if d.Identical {
		return d, nil
	}
	ca, err := a.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config of A: %w", err)
	}
	cb, err := b.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config of B: %w", err)
	}
	if d.Config, err = DiffJSON(ca, cb, "rootfs"); err != nil {
		return nil, err
	}
	la, err := ImageLayers(a)
	if err != nil {
		return nil, fmt.Errorf("layers of A: %w", err)
	}
	lb, err := ImageLayers(b)
	if err != nil {
		return nil, fmt.Errorf("layers of B: %w", err)
	}
	if d.Layers, err = DiffLayers(ctx, la, lb); err != nil {
		return nil, err
	}
	if len(d.Config) == 0 && !Changed(d.Layers) {
		ma, err := a.RawManifest()
		if err != nil {
			return nil, err
		}
		mb, err := b.RawManifest()
		if err != nil {
			return nil, err
		}
		if d.Manifest, err = DiffJSON(ma, mb); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Changed reports whether any layer differs.
func Changed(ls []LayerChange) bool {
	for _, l := range ls {
		if l.Status != "same" {
			return true
		}
	}
	return false
}

// ImageLayers lists an image's layers with the history entries that made
// them (the entries not marked empty_layer, in order).
func ImageLayers(img v1.Image) ([]Layer, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	var made []string
	for _, h := range cfg.History {
		if !h.EmptyLayer {
			made = append(made, h.CreatedBy)
		}
	}
	out := make([]Layer, len(layers))
	for i, l := range layers {
		d, err := l.DiffID()
		if err != nil {
			return nil, err
		}
		out[i] = Layer{DiffID: d.String(), Open: l.Uncompressed}
		if i < len(made) {
			out[i].CreatedBy = made[i]
		}
	}
	return out, nil
}

// DiffLayers aligns the layers of A and B by what made them (the longest
// common sequence of history entries; unmatched layers between two matched
// ones pair up in order) and compares each pair file by file. A layer
// only in A is removed, only in B added, with its files.
func DiffLayers(ctx context.Context, a, b []Layer) ([]LayerChange, error) {
	var out []LayerChange
	for _, p := range align(a, b) {
		c := LayerChange{}
		var la, lb *Layer
		if p[0] >= 0 {
			la = &a[p[0]]
			c.IndexA, c.DiffIDA, c.CreatedBy = p[0]+1, la.DiffID, la.CreatedBy
		}
		if p[1] >= 0 {
			lb = &b[p[1]]
			c.IndexB, c.DiffIDB, c.CreatedBy = p[1]+1, lb.DiffID, lb.CreatedBy
		}
		switch {
		case la != nil && lb != nil && la.DiffID == lb.DiffID:
			c.Status = "same"
			out = append(out, c)
			continue
		case la == nil:
			c.Status = "added"
		case lb == nil:
			c.Status = "removed"
		default:
			c.Status = "changed"
		}
		ea, err := readLayer(ctx, la)
		if err != nil {
			return nil, fmt.Errorf("layer %d of A: %w", c.IndexA, err)
		}
		eb, err := readLayer(ctx, lb)
		if err != nil {
			return nil, fmt.Errorf("layer %d of B: %w", c.IndexB, err)
		}
		c.Files = DiffEntries(ea, eb)
		out = append(out, c)
	}
	return out, nil
}

func readLayer(ctx context.Context, l *Layer) (map[string]Entry, error) {
	if l == nil {
		return map[string]Entry{}, nil
	}
	rc, err := l.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return ReadLayer(ctx, rc)
}

// align pairs indexes of a and b: matched history entries (a longest
// common subsequence), and between two matches the unmatched ones in
// order; -1 marks a missing side.
func align(a, b []Layer) [][2]int {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i].CreatedBy == b[j].CreatedBy {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out [][2]int
	var ra, rb []int // unmatched runs since the last match
	flush := func() {
		for k := 0; k < max(len(ra), len(rb)); k++ {
			p := [2]int{-1, -1}
			if k < len(ra) {
				p[0] = ra[k]
			}
			if k < len(rb) {
				p[1] = rb[k]
			}
			out = append(out, p)
		}
		ra, rb = nil, nil
	}
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case a[i].CreatedBy == b[j].CreatedBy && lcs[i][j] == lcs[i+1][j+1]+1:
			flush()
			out = append(out, [2]int{i, j})
			i, j = i+1, j+1
		case lcs[i+1][j] >= lcs[i][j+1]:
			ra = append(ra, i)
			i++
		default:
			rb = append(rb, j)
			j++
		}
	}
	for ; i < n; i++ {
		ra = append(ra, i)
	}
	for ; j < m; j++ {
		rb = append(rb, j)
	}
	flush()
	return out
}

// DiffJSON compares two JSON documents leaf by leaf ("config.Env[1]",
// "history[3].created"), leaving out the top-level keys skip.
func DiffJSON(a, b []byte, skip ...string) ([]FieldChange, error) {
	fa, err := flatten(a, skip)
	if err != nil {
		return nil, err
	}
	fb, err := flatten(b, skip)
	if err != nil {
		return nil, err
	}
	var out []FieldChange
	for k, va := range fa {
		if vb, ok := fb[k]; !ok || va != vb {
			out = append(out, FieldChange{Field: k, A: va, B: show(vb, ok)})
		}
	}
	for k, vb := range fb {
		if _, ok := fa[k]; !ok {
			out = append(out, FieldChange{Field: k, A: "unset", B: vb})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Field < out[j].Field })
	return out, nil
}

func show(v string, ok bool) string {
	if !ok {
		return "unset"
	}
	return v
}

func flatten(data []byte, skip []string) (map[string]string, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode JSON: %w", err)
	}
	if m, ok := v.(map[string]any); ok {
		for _, k := range skip {
			delete(m, k)
		}
	}
	out := map[string]string{}
	walk("", v, out)
	return out, nil
}

func walk(prefix string, v any, out map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 && prefix != "" {
			out[prefix] = "{}"
		}
		for k, c := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			walk(p, c, out)
		}
	case []any:
		if len(x) == 0 {
			out[prefix] = "[]"
		}
		for i, c := range x {
			walk(prefix+"["+strconv.Itoa(i)+"]", c, out)
		}
	case string:
		out[prefix] = x
	case nil:
		out[prefix] = "null"
	default:
		out[prefix] = fmt.Sprint(x)
	}
}
