package exporter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/snapshot"
)

// FsckReport is what Fsck found and, with repair, did.
type FsckReport struct {
	Problems []cache.Problem
	// Checked counts what was looked at: "blobs", "layers", "images".
	Checked map[string]int
}

// Remaining counts the problems a repair did not fix.
func (r *FsckReport) Remaining() int {
	n := 0
	for _, p := range r.Problems {
		if p.Repaired == "" || strings.HasPrefix(p.Repaired, "could not") {
			n++
		}
	}
	return n
}

// Fsck checks the whole store: the image index, every blob (its content
// has its digest), every layer directory (its layer.json; a committed
// layer re-serializes to its diffID, an unpacked one equals the blob it
// came from), every key record (it decodes, its blobs and layer exist),
// the build records and the hash memo, the compressed copies of layers,
// and every tag (manifest, config and each layer readable). It changes
// nothing unless repair: then it rebuilds a damaged index and removes what
// is damaged, so the next build makes it again, and reports the images
// that can only come back by a pull, a load or a build. The caller holds
// the store's exclusive lock for a repair.
func (s *Store) Fsck(ctx context.Context, repair bool) (*FsckReport, error) {
	if s.c == nil || s.ls == nil {
		return nil, errors.New("fsck: the store has no cache and layer store")
	}
	r := &FsckReport{Checked: map[string]int{}}
	o := cache.FsckOptions{Repair: repair}
	add := func(ps []cache.Problem, err error) error {
		r.Problems = append(r.Problems, ps...)
		return err
	}
	if err := add(s.c.FsckIndex(ctx, o)); err != nil {
		return r, err
	}
	refs, err := s.references(ctx)
	if err != nil {
		return r, err
	}
	r.Checked["images"] = len(refs.images)
	o.Needs = refs.needs
	if err := add(s.c.FsckBlobs(ctx, o)); err != nil {
		return r, err
	}
	if entries, err := os.ReadDir(filepath.Join(s.c.Root(), "blobs", "sha256")); err == nil {
		r.Checked["blobs"] = len(entries)
	}
	if err := add(s.fsckLayers(ctx, refs, repair, r)); err != nil {
		return r, err
	}
	// A layer hit in a remote cache and not fetched yet is remote-backed
	// (lazy.go): its record is whole.
	o.HasLayer = func(diffID string) bool {
		if s.layers.Has(diffID) {
			return true
		}
		d, err := v1.NewHash(diffID)
		return err == nil && s.remoteBacked(d)
	}
	for _, f := range []func(context.Context, cache.FsckOptions) ([]cache.Problem, error){s.c.FsckRecords, s.c.FsckBuilds, s.c.FsckHashes} {
		if err := add(f(ctx, o)); err != nil {
			return r, err
		}
	}
	if err := add(s.fsckCompressed(ctx, repair)); err != nil {
		return r, err
	}
	return r, add(s.fsckImages(ctx, refs))
}

// storeRefs is what the tagged images need, read without changing the
// store.
type storeRefs struct {
	images []taggedImage
	users  map[string][]string // blob digest → what needs it
	fixes  map[string]string   // blob digest → what to do when it is gone
	// sources maps diffIDs to a layer blob holding them, to check
	// unpacked layers against.
	sources map[string]v1.Descriptor
	// layerUsers maps diffIDs to the image layers that are them.
	layerUsers map[string][]string
}

type taggedImage struct {
	names  []string // familiar
	digest string
}

func (t taggedImage) name() string { return strings.Join(t.names, ", ") }

func (r *storeRefs) needs(digest string) (string, string) {
	return strings.Join(r.users[digest], ", "), r.fixes[digest]
}

func (r *storeRefs) use(digest, user, fix string) {
	if !contains(r.users[digest], user) {
		r.users[digest] = append(r.users[digest], user)
	}
	if r.fixes[digest] == "" {
		r.fixes[digest] = fix
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// taggedManifests are the image manifests the tag name (naming digest)
// needs checked: the image itself, or the platforms' images of an index
// that are in the store (an index pulled from a registry holds only the
// platforms pulled; the others come when a build needs them). The index
// and its attestation manifests are recorded as used by the tag.
func (s *Store) taggedManifests(ctx context.Context, refs *storeRefs, name, digest string) []string {
	raw, err := s.peek(ctx, digest) // fsck leaves a damaged blob in place
	var m v1.IndexManifest
	if err != nil || json.Unmarshal(raw, &m) != nil || m.Manifests == nil {
		return []string{digest} // an image, or damaged: checked as one
	}
	refs.use(digest, "image "+name+" (index)", s.advice(ctx, name, digest))
	var out []string
	for _, d := range m.Manifests {
		child := d.Digest.String()
		switch {
		case d.Annotations[AnnotationReferenceType] == ReferenceTypeAttestation:
			refs.use(child, "image "+name+" (attestation manifest)", s.advice(ctx, name, digest))
		case s.blobs.HasBlob(child):
			out = append(out, child)
		}
	}
	return out
}

// references reads what every tag needs, and what the compressed copies
// are.
func (s *Store) references(ctx context.Context) (*storeRefs, error) {
	refs := &storeRefs{users: map[string][]string{}, fixes: map[string]string{}, sources: map[string]v1.Descriptor{}, layerUsers: map[string][]string{}}
	tags, err := s.blobs.Tags(ctx)
	if errors.Is(err, cache.ErrCorrupt) {
		return refs, nil // reported by FsckIndex; nothing to walk
	}
	if err != nil {
		return nil, err
	}
	byDigest := map[string]int{}
	add := func(digest, name string) {
		i, ok := byDigest[digest]
		if !ok {
			i = len(refs.images)
			byDigest[digest] = i
			refs.images = append(refs.images, taggedImage{digest: digest})
		}
		refs.images[i].names = append(refs.images[i].names, name)
	}
	for _, t := range tags {
		name := cache.FamiliarName(t.Name)
		for _, d := range s.taggedManifests(ctx, refs, name, t.Digest) {
			add(d, name)
		}
	}
	type origin struct {
		name, digest string
		n            int
	}
	origins := map[string]origin{} // layer blob → image with the fewest layers
	type parsed struct {
		ti  *taggedImage
		m   *v1.Manifest
		cfg *v1.ConfigFile
	}
	var all []parsed
	for i := range refs.images {
		ti := &refs.images[i]
		name := ti.names[0]
		refs.use(ti.digest, "image "+ti.name()+" (manifest)", s.advice(ctx, name, ti.digest))
		m, cfg, _ := s.peekManifest(ctx, ti.digest)
		if m == nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		refs.use(m.Config.Digest.String(), "image "+ti.name()+" (config)", s.advice(ctx, name, ti.digest))
		all = append(all, parsed{ti, m, cfg})
		for _, l := range m.Layers {
			d := l.Digest.String()
			if o, ok := origins[d]; !ok || len(m.Layers) < o.n {
				origins[d] = origin{name, ti.digest, len(m.Layers)}
			}
		}
	}
	for _, p := range all {
		name := p.ti.names[0]
		for i, l := range p.m.Layers {
			d := l.Digest.String()
			o := origins[d]
			fix := s.advice(ctx, o.name, o.digest)
			if o.digest != p.ti.digest {
				fix = fmt.Sprintf("the layer comes from image %s: %s, then build %s again", o.name, fix, name)
			}
			user := "image " + p.ti.name() + " (" + layerPart(p.cfg, i) + ")"
			refs.use(d, user, fix)
			if p.cfg != nil && i < len(p.cfg.RootFS.DiffIDs) {
				diffID := p.cfg.RootFS.DiffIDs[i].String()
				refs.layerUsers[diffID] = append(refs.layerUsers[diffID], user)
				if _, ok := refs.sources[diffID]; !ok && l.MediaType.IsLayer() {
					refs.sources[diffID] = l
				}
			}
		}
	}
	for _, rec := range s.compressedRecords() {
		refs.use(rec.Digest.String(), "the compressed copy of layer "+rec.DiffID.String(), "the next push or --cache-to compresses the layer again; builder fsck --repair removes the blob")
	}
	return refs, nil
}

// compressedRecords reads the compressed/ records that decode.
func (s *Store) compressedRecords() []compressedRecord {
	entries, err := os.ReadDir(s.compressedDir)
	if err != nil {
		return nil
	}
	var out []compressedRecord
	for _, e := range entries {
		var rec compressedRecord
		data, err := os.ReadFile(filepath.Join(s.compressedDir, e.Name()))
		if err == nil && json.Unmarshal(data, &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

func (s *Store) rel(p string) string {
	if r, err := filepath.Rel(s.c.Root(), p); err == nil {
		return r
	}
	return p
}

// fsckLayers checks every layer directory.
func (s *Store) fsckLayers(ctx context.Context, refs *storeRefs, repair bool, r *FsckReport) ([]cache.Problem, error) {
	dirs, stray, err := s.ls.Entries()
	if err != nil {
		return nil, err
	}
	r.Checked["layers"] = len(dirs)
	var out []cache.Problem
	for _, n := range stray {
		p := filepath.Join(s.ls.Root(), n)
		pr := cache.Problem{Path: s.rel(p), What: "not a layer directory", Fix: "builder fsck --repair removes it"}
		if repair {
			pr.Repaired = "removed"
			if err := os.RemoveAll(p); err != nil {
				pr.Repaired = "could not remove it: " + err.Error()
			}
		}
		out = append(out, pr)
	}
	for _, diffID := range dirs {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		committed := s.ls.Committed(diffID)
		var src io.ReadCloser
		if !committed && s.layers.Has(diffID) {
			src = s.layerSource(ctx, refs, diffID)
		}
		_, err := s.ls.Verify(ctx, diffID, src)
		if src != nil {
			src.Close()
		}
		if err == nil || errors.Is(err, snapshot.ErrBadSource) {
			continue // a bad source blob is reported with the blobs
		}
		dir := filepath.Dir(s.ls.Dir(diffID))
		pr := cache.Problem{Digest: diffID, NeededBy: strings.Join(refs.layerUsers[diffID], ", ")}
		switch {
		case errors.Is(err, snapshot.ErrBadMetadata):
			pr.Path = s.rel(filepath.Join(dir, "layer.json"))
			pr.What = "layer.json missing or damaged: builds do not use this layer"
			pr.Fix = "builds make or unpack it again; builder fsck --repair removes the directory"
		case errors.Is(err, snapshot.ErrModified):
			pr.Path = s.rel(filepath.Join(dir, "fs"))
			if committed {
				pr.What = "changed on disk: it no longer serializes to its diffID"
				pr.Fix = "builder fsck --repair removes it and the cache records that made it; the next build rebuilds it"
			} else {
				pr.What = "changed on disk: it differs from the layer blob it was unpacked from"
				pr.Fix = "builder fsck --repair removes it; the next build unpacks it again from its blob"
			}
		default:
			return out, err
		}
		if repair {
			pr.Repaired = "removed"
			if err := s.ls.Remove(ctx, diffID); err != nil && !errors.Is(err, snapshot.ErrNotFound) {
				pr.Repaired = "could not remove it: " + err.Error()
			}
		}
		out = append(out, pr)
	}
	return out, nil
}

// layerSource opens the uncompressed tar of diffID from a blob that
// verifies (without removing any), or returns nil.
func (s *Store) layerSource(ctx context.Context, refs *storeRefs, diffID string) io.ReadCloser {
	h, err := v1.NewHash(diffID)
	if err != nil {
		return nil
	}
	if d, ok := refs.sources[diffID]; ok && s.c.VerifyBlob(ctx, d.Digest.String()) == nil {
		l, err := LayerFromBlob(ctx, s.blobs, d, h)
		if err == nil {
			if rc, err := l.Uncompressed(); err == nil {
				return rc
			}
		}
	}
	if rec, ok := s.anyCompressedRecord(h); ok && s.c.VerifyBlob(ctx, rec.Digest.String()) == nil {
		rc, err := s.blobs.OpenBlob(ctx, rec.Digest.String())
		if err != nil {
			return nil
		}
		zr, err := decompress(rc, rec.MediaType)
		if err != nil {
			rc.Close()
			return nil
		}
		return struct {
			io.Reader
			io.Closer
		}{zr, rc}
	}
	return nil
}

// fsckCompressed checks the compressed/ records: each decodes, is named
// by its diffID and names a blob that is there.
func (s *Store) fsckCompressed(ctx context.Context, repair bool) ([]cache.Problem, error) {
	entries, err := os.ReadDir(s.compressedDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []cache.Problem
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		p := filepath.Join(s.compressedDir, e.Name())
		var rec compressedRecord
		data, err := os.ReadFile(p)
		what := ""
		switch {
		case err != nil:
			what = err.Error()
		case json.Unmarshal(data, &rec) != nil:
			what = "damaged record (does not decode)"
		case rec.compression().recordName(rec.DiffID.Hex) != e.Name() || rec.MediaType != rec.compression().mediaType():
			what = "damaged record (names another layer or media type)"
		case !s.blobs.HasBlob(rec.Digest.String()) && len(s.sourcesOf(rec.Digest)) == 0:
			what = "its compressed blob " + rec.Digest.String() + " is gone"
		}
		if what == "" {
			continue
		}
		pr := cache.Problem{Path: s.rel(p), What: what, Fix: "the next push or --cache-to compresses the layer again; builder fsck --repair removes the record"}
		if repair {
			pr.Repaired = "removed"
			if err := os.Remove(p); err != nil {
				pr.Repaired = "could not remove it: " + err.Error()
			}
		}
		out = append(out, pr)
	}
	return out, nil
}

// fsckImages checks that every tagged image can be read whole: its
// manifest, config and every layer (a blob, or a layer directory that
// reproduces it). Blobs found damaged are reported by the blob check;
// this reports what is gone, which only a pull, a load or a build brings
// back.
func (s *Store) fsckImages(ctx context.Context, refs *storeRefs) ([]cache.Problem, error) {
	var out []cache.Problem
	blobProblem := func(ti taggedImage, part, digest string, err error) {
		if errors.Is(err, cache.ErrCorrupt) {
			return // reported by FsckBlobs
		}
		what := "missing from the store"
		if !errors.Is(err, cache.ErrNotFound) {
			what = err.Error()
		}
		out = append(out, cache.Problem{Path: s.rel(filepath.Join(s.c.Root(), "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))),
			Digest: digest, What: what, NeededBy: "image " + ti.name() + " (" + part + ")", Fix: refs.fixes[digest]})
	}
	for _, ti := range refs.images {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		raw, err := s.peek(ctx, ti.digest)
		if err != nil {
			blobProblem(ti, "manifest", ti.digest, err)
			continue
		}
		var m v1.Manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			blobProblem(ti, "manifest", ti.digest, fmt.Errorf("manifest does not decode: %v", err))
			continue
		}
		rawCfg, err := s.peek(ctx, m.Config.Digest.String())
		if err != nil {
			blobProblem(ti, "config", m.Config.Digest.String(), err)
			continue
		}
		cfg, err := v1.ParseConfigFile(strings.NewReader(string(rawCfg)))
		if err != nil || len(cfg.RootFS.DiffIDs) != len(m.Layers) {
			blobProblem(ti, "config", m.Config.Digest.String(), fmt.Errorf("config does not decode or does not match the manifest"))
			continue
		}
		for i, l := range m.Layers {
			if _, err := s.layer(ctx, l, cfg.RootFS.DiffIDs[i]); err == nil {
				continue
			}
			d := l.Digest.String()
			out = append(out, cache.Problem{Path: s.rel(filepath.Join(s.c.Root(), "blobs", "sha256", l.Digest.Hex)), Digest: d,
				What: errNoLayer.Error(), NeededBy: "image " + ti.name() + " (" + layerPart(cfg, i) + ")", Fix: refs.fixes[d]})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NeededBy < out[j].NeededBy })
	return out, nil
}
