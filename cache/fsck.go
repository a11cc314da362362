package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Problem is one thing a check of the store (fsck) found wrong.
type Problem struct {
	Path     string // the damaged or missing file or directory, relative to the root
	Digest   string // its digest, cache key or diffID, when it has one
	What     string // what is wrong
	NeededBy string // what needs it, when known: "image app:1 (layer 2)"
	Fix      string // what to do about it
	Repaired string // what a repair did; "" when nothing was done
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Path)
	if h := strings.TrimPrefix(p.Digest, "sha256:"); h != "" && !strings.Contains(p.Path, h) {
		b.WriteString(" (" + p.Digest + ")")
	}
	b.WriteString(": " + p.What)
	if p.NeededBy != "" {
		b.WriteString("; needed by " + p.NeededBy)
	}
	switch {
	case p.Repaired != "":
		b.WriteString("; repaired: " + p.Repaired)
	case p.Fix != "":
		b.WriteString("; " + p.Fix)
	}
	return b.String()
}

// FsckOptions are the inputs of the store checks.
type FsckOptions struct {
	// Repair removes what is damaged (so the next build makes it again)
	// and rebuilds a damaged image index; without it the store is not
	// changed.
	Repair bool
	// Needs says what needs a blob and what to do when it is damaged or
	// gone; nil or "" when nothing known needs it.
	Needs func(digest string) (neededBy, fix string)
	// HasLayer reports whether the layer store holds diffID; nil skips the
	// check that key records' layers exist.
	HasLayer func(diffID string) bool
}

func (s *Store) rel(p string) string {
	if r, err := filepath.Rel(s.root, p); err == nil {
		return r
	}
	return p
}

// remove deletes p for a repair and says so.
func (s *Store) remove(p string) string {
	if err := os.RemoveAll(p); err != nil {
		return fmt.Sprintf("could not remove it: %v", err)
	}
	return "removed"
}

// FsckBlobs checks that every blob's content has the digest it is named
// by. A damaged blob is removed with Repair.
func (s *Store) FsckBlobs(ctx context.Context, o FsckOptions) ([]Problem, error) {
	entries, err := os.ReadDir(s.blobs)
	if err != nil {
		return nil, fmt.Errorf("check blobs: %w", err)
	}
	users := s.recordBlobUsers(ctx)
	var out []Problem
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		p := filepath.Join(s.blobs, e.Name())
		d := "sha256:" + e.Name()
		if _, err := parseDigest(d); err != nil || !e.Type().IsRegular() {
			pr := Problem{Path: s.rel(p), What: "not a blob (a blob is a file named by its sha256)", Fix: "builder fsck --repair removes it"}
			if o.Repair {
				pr.Repaired = s.remove(p)
			}
			out = append(out, pr)
			continue
		}
		err := s.VerifyBlob(ctx, d)
		var ce *CorruptBlobError
		switch {
		case err == nil, errors.Is(err, ErrNotFound):
			continue
		case !errors.As(err, &ce):
			return out, err
		}
		pr := Problem{Path: s.rel(p), Digest: d, What: "content has digest " + ce.Got + " (damaged or truncated)"}
		if o.Needs != nil {
			pr.NeededBy, pr.Fix = o.Needs(d)
		}
		if pr.NeededBy == "" && users[d] != "" {
			pr.NeededBy, pr.Fix = users[d], "builds miss that step and rebuild it; builder fsck --repair removes the blob"
		}
		if pr.Fix == "" {
			pr.Fix = "builder fsck --repair removes it"
		}
		if o.Repair {
			pr.Repaired = s.remove(p)
		}
		out = append(out, pr)
	}
	return out, nil
}

// recordBlobUsers maps the blobs key records list to the first record's
// step.
func (s *Store) recordBlobUsers(ctx context.Context) map[string]string {
	users := map[string]string{}
	recs, err := s.loadRecordsKeep(ctx)
	if err != nil {
		return users
	}
	for _, r := range recs {
		for _, b := range r.Blobs {
			if users[b] == "" {
				users[b] = "the cache record of " + strings.TrimSuffix(r.CreatedBy, " # buildkit")
			}
		}
	}
	return users
}

// loadRecordsKeep decodes every key record, skipping (not removing)
// damaged ones.
func (s *Store) loadRecordsKeep(ctx context.Context) ([]*Record, error) {
	entries, err := os.ReadDir(s.keys)
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if rec, err := decodeRecord(filepath.Join(s.keys, e.Name())); err == nil {
			out = append(out, rec)
		}
	}
	return out, nil
}

// FsckRecords checks every key record: it decodes (its checksum matches),
// it is named by its key, the blobs it lists exist, and its layer is in the
// layer store. A record failing any of these is a cache miss for builds;
// Repair removes it.
func (s *Store) FsckRecords(ctx context.Context, o FsckOptions) ([]Problem, error) {
	entries, err := os.ReadDir(s.keys)
	if err != nil {
		return nil, fmt.Errorf("check cache records: %w", err)
	}
	var out []Problem
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		p := filepath.Join(s.keys, e.Name())
		what := ""
		var rec *Record
		k, kerr := ParseKey("sha256:" + strings.TrimSuffix(e.Name(), ".json"))
		switch {
		case !strings.HasSuffix(e.Name(), ".json") || kerr != nil || !e.Type().IsRegular():
			what = "not a cache record (a record is <key hex>.json)"
		default:
			rec, err = decodeRecord(p)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				what = err.Error()
			} else if err := s.checkRecord(k, rec); err != nil {
				what = err.Error()
			} else if o.HasLayer != nil && rec.DiffID != "" && !rec.EmptyLayer && !o.HasLayer(rec.DiffID) {
				what = "its layer " + rec.DiffID + " is not in the layer store"
			}
		}
		if what == "" {
			continue
		}
		pr := Problem{Path: s.rel(p), What: what, Fix: "builds miss this step and rebuild it; builder fsck --repair removes the record"}
		if kerr == nil {
			pr.Digest = k.String()
		}
		if rec != nil && rec.CreatedBy != "" {
			pr.NeededBy = "the cache of " + strings.TrimSuffix(rec.CreatedBy, " # buildkit")
		}
		if o.Repair {
			pr.Repaired = s.remove(p)
		}
		out = append(out, pr)
	}
	return out, nil
}

// FsckBuilds checks the build records and the pointers to them. They only
// explain cache misses and fill `builder history`: builds skip a damaged
// one, and Repair removes it.
func (s *Store) FsckBuilds(ctx context.Context, o FsckOptions) ([]Problem, error) {
	entries, err := os.ReadDir(s.builds)
	if err != nil {
		return nil, fmt.Errorf("check build records: %w", err)
	}
	var out []Problem
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		p := filepath.Join(s.builds, e.Name())
		what := s.buildProblem(e.Name())
		if what == "" {
			continue
		}
		pr := Problem{Path: s.rel(p), What: what, Fix: "builds and history ignore it; builder fsck --repair removes it"}
		if o.Repair {
			pr.Repaired = s.remove(p)
		}
		out = append(out, pr)
	}
	return out, nil
}

// buildProblem says what is wrong with the entry name of the builds
// directory, "" when nothing is. Builds, prunes and `builder builds rm`
// change the directory meanwhile: an entry removed since it was listed is
// no problem, and a pointer whose build is gone is read again (pointers go
// before their builds: one still there, naming the same build, dangles).
func (s *Store) buildProblem(name string) string {
	p := filepath.Join(s.builds, name)
	switch {
	case strings.HasSuffix(name, ".json"):
		b, err := decodeBuild(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return err.Error()
		case b.ID+".json" != name:
			return "holds build " + b.ID
		}
	case strings.HasSuffix(name, ".ref"):
		ptr, ok := s.readPointer(name)
		for ok {
			if _, err := os.Stat(filepath.Join(s.builds, ptr.ID+".json")); err == nil {
				return ""
			}
			again, still := s.readPointer(name)
			if still && again.ID == ptr.ID {
				return "points at build " + ptr.ID + ", which is gone"
			}
			ptr, ok = again, still
		}
		if _, err := os.Lstat(p); err == nil {
			return "damaged build pointer"
		}
	}
	return ""
}

// FsckHashes checks the shards of the file hash memo. A damaged shard is
// ignored by builds (its files are hashed again); Repair removes it.
func (s *Store) FsckHashes(ctx context.Context, o FsckOptions) ([]Problem, error) {
	entries, err := os.ReadDir(s.hashes.dir)
	if err != nil {
		return nil, fmt.Errorf("check hash memo: %w", err)
	}
	var out []Problem
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if !strings.HasSuffix(e.Name(), ".memo") {
			continue
		}
		p := filepath.Join(s.hashes.dir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if _, err := decodeShard(data); err == nil {
			continue
		}
		pr := Problem{Path: s.rel(p), What: "damaged hash memo shard (checksum or encoding)", Fix: "builds ignore it and hash those files again; builder fsck --repair removes it"}
		if o.Repair {
			pr.Repaired = s.remove(p)
		}
		out = append(out, pr)
	}
	return out, nil
}

// FsckIndex checks the image index and its copy. With Repair a damaged or
// deleted index is rebuilt (RepairIndex) and a damaged copy rewritten.
func (s *Store) FsckIndex(ctx context.Context, o FsckOptions) ([]Problem, error) {
	_, err := s.readIndex(ctx)
	var ie *IndexError
	switch {
	case errors.As(err, &ie):
		pr := Problem{Path: s.rel(s.indexPath()), What: "damaged (" + ie.Reason + "): the tags cannot be read",
			Fix: "builder fsck --repair rebuilds it from what is left (its copy " + indexBackup + " and the build records)"}
		if o.Repair {
			r, err := s.RepairIndex(ctx)
			if err != nil {
				pr.Repaired = "could not rebuild it: " + err.Error()
			} else {
				pr.Repaired = r.String()
			}
		}
		return []Problem{pr}, nil
	case err != nil:
		return nil, err
	}
	bak, err := os.ReadFile(s.indexBackupPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // a store from before the copy: the next tag writes it
	}
	if err == nil {
		_, err = decodeIndex(bak)
	}
	if err == nil {
		return nil, nil
	}
	pr := Problem{Path: s.rel(s.indexBackupPath()), What: "damaged copy of the image index (" + err.Error() + ")", Fix: "builder fsck --repair writes it again"}
	if o.Repair {
		pr.Repaired = "written again from " + indexFile
		if err := s.updateIndex(ctx, func(*ociIndex) error { return nil }); err != nil {
			pr.Repaired = "could not write it: " + err.Error()
		}
	}
	return []Problem{pr}, nil
}

// IndexRepair says what RepairIndex kept.
type IndexRepair struct {
	Tags                            int // tags in the new index
	FromIndex, FromCopy, FromBuilds int // where they came from
	Untagged                        int // entries without a name kept
	Unreadable                      int // entries of index.json that could not be read
}

func (r IndexRepair) String() string {
	s := fmt.Sprintf("rebuilt it with %s (%d from what was left of %s, %d from %s, %d from build records)",
		plural(r.Tags, "tag"), r.FromIndex, indexFile, r.FromCopy, indexBackup, r.FromBuilds)
	if r.Unreadable > 0 {
		s += fmt.Sprintf("; %s could not be read", plural(r.Unreadable, "entry"))
	}
	return s
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	if strings.HasSuffix(word, "y") {
		return fmt.Sprintf("%d %sies", n, word[:len(word)-1])
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// RepairIndex rebuilds images/index.json from what can be read of it, of
// its copy and of the build records (the tags each build set, newest
// first), under the index lock. A name keeps the first readable entry in
// that order; an entry from a build record is kept only if its manifest is
// stored. Entries that are valid are never dropped.
func (s *Store) RepairIndex(ctx context.Context) (IndexRepair, error) {
	var r IndexRepair
	unlock, err := flockPath(ctx, filepath.Join(s.images, "index.lock"), unix.LOCK_EX)
	if err != nil {
		return r, fmt.Errorf("lock image index: %w", err)
	}
	defer unlock()
	byName := map[string]bool{}
	byDigest := map[string]bool{} // of untagged entries
	idx := &ociIndex{SchemaVersion: 2, MediaType: mediaTypeOCIIndex}
	add := func(d descriptor) bool {
		n := d.Annotations[AnnotationRefName]
		if n == "" {
			if byDigest[d.Digest] {
				return false
			}
			byDigest[d.Digest] = true
			r.Untagged++
		} else {
			if byName[n] {
				return false
			}
			byName[n] = true
			r.Tags++
		}
		idx.Manifests = append(idx.Manifests, d)
		return true
	}
	for i, p := range []string{s.indexPath(), s.indexBackupPath()} {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		entries, lost := salvageIndex(data)
		if i == 0 {
			r.Unreadable = lost
		}
		for _, d := range entries {
			if add(d) && d.Annotations[AnnotationRefName] != "" {
				if i == 0 {
					r.FromIndex++
				} else {
					r.FromCopy++
				}
			}
		}
	}
	var builds []*BuildRecord
	err = s.eachBuild(ctx, func(_ string, b *BuildRecord) error {
		if !b.Finished.IsZero() && b.ImageDigest != "" && len(b.Tags) > 0 {
			builds = append(builds, b)
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return r, err
	}
	sort.Slice(builds, func(i, j int) bool { return builds[i].Finished.After(builds[j].Finished) })
	for _, b := range builds {
		for _, t := range b.Tags {
			full, err := NormalizeName(t)
			if err != nil || byName[full] || !s.HasBlob(b.ImageDigest) {
				continue
			}
			desc, err := s.manifestDescriptor(ctx, b.ImageDigest)
			if err != nil {
				continue
			}
			desc.Annotations = map[string]string{AnnotationRefName: full, AnnotationCreated: b.Finished.UTC().Format(time.RFC3339Nano)}
			if add(desc) {
				r.FromBuilds++
			}
		}
	}
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return r, err
	}
	return r, s.writeIndex(ctx, data)
}

// salvageIndex returns the valid entries of an index file, decoding its
// manifests one by one when the whole does not decode, and how many it
// had to drop (entries after a syntax error count as one).
func salvageIndex(data []byte) (entries []descriptor, lost int) {
	if idx, err := decodeIndex(data); err == nil {
		return idx.Manifests, 0
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if !seekManifests(dec) {
		return nil, 1
	}
	for dec.More() {
		var d descriptor
		if err := dec.Decode(&d); err != nil {
			return entries, lost + 1
		}
		if checkIndexEntry(d) != nil {
			lost++
			continue
		}
		entries = append(entries, d)
	}
	return entries, lost
}

// seekManifests advances dec into the array of the top-level "manifests".
func seekManifests(dec *json.Decoder) bool {
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		if t == "manifests" {
			t, err := dec.Token()
			return err == nil && t == json.Delim('[')
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	return false
}

// errDamaged marks a file that does not decode or whose checksum is wrong.
var errDamaged = errors.New("damaged")

// decodeRecord decodes a record file without removing it when damaged
// (an error wrapping errDamaged).
func decodeRecord(p string) (*Record, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	body, err := unseal(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errDamaged, err)
	}
	rec := new(Record)
	if err := json.Unmarshal(body, rec); err != nil {
		return nil, fmt.Errorf("%w: %v", errDamaged, err)
	}
	return rec, nil
}

// validStrings reports whether none of ss holds the replacement character
// a decoder substitutes for invalid UTF-8.
func validStrings(ss ...string) bool {
	for _, s := range ss {
		if strings.ContainsRune(s, utf8.RuneError) {
			return false
		}
	}
	return true
}
