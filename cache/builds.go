package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Build records are listed, looked up by a prefix of their ID, removed and
// kept bounded here; each may have a log, builds/<id>.log, holding the
// build's progress output as it was printed.

// logSuffix names a build's log file beside its record.
const logSuffix = ".log"

// ListBuilds returns every readable build record, newest start first.
// Step inputs stored as blobs are not loaded (see GetBuild).
func (s *Store) ListBuilds(ctx context.Context) ([]*BuildRecord, error) {
	var out []*BuildRecord
	err := s.eachBuild(ctx, func(_ string, b *BuildRecord) error {
		out = append(out, b)
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	sortBuilds(out)
	return out, nil
}

// sortBuilds orders builds newest start first, then by ID.
func sortBuilds(bs []*BuildRecord) {
	sort.SliceStable(bs, func(i, j int) bool {
		if !bs[i].Started.Equal(bs[j].Started) {
			return bs[i].Started.After(bs[j].Started)
		}
		return bs[i].ID < bs[j].ID
	})
}

// FindBuild returns the build named by ref: a full ID, a prefix of one ID
// only, or "latest" (the build started last). The record's step inputs
// are loaded as GetBuild does. A ref naming no build is an error wrapping
// ErrNotFound; a prefix of several IDs is an error naming them.
func (s *Store) FindBuild(ctx context.Context, ref string) (*BuildRecord, error) {
	if ref != "latest" && validBuildID(ref) == nil {
		if b, err := s.GetBuild(ctx, ref); !errors.Is(err, ErrNotFound) {
			return b, err
		}
	}
	all, err := s.ListBuilds(ctx)
	if err != nil {
		return nil, err
	}
	var match []*BuildRecord
	for _, b := range all {
		if ref == "latest" || strings.HasPrefix(b.ID, ref) {
			match = append(match, b)
		}
	}
	switch {
	case len(match) == 0 && ref == "latest":
		return nil, fmt.Errorf("no build records in %s: %w", s.root, ErrNotFound)
	case len(match) == 0:
		return nil, fmt.Errorf("no build record %q: %w", ref, ErrNotFound)
	case len(match) > 1 && ref != "latest":
		ids := make([]string, 0, len(match))
		for _, b := range match {
			ids = append(ids, b.ID)
		}
		return nil, fmt.Errorf("build ID prefix %q is ambiguous: %s", ref, strings.Join(ids, ", "))
	}
	b := match[0]
	s.loadInputs(ctx, b)
	return b, nil
}

// RemoveBuild removes the build record id, its log and the build pointers
// left naming no build.
func (s *Store) RemoveBuild(ctx context.Context, id string) error {
	if err := validBuildID(id); err != nil {
		return fmt.Errorf("remove build: %w", err)
	}
	if err := s.unpoint(ctx, map[string]bool{id: true}); err != nil {
		return fmt.Errorf("remove build %s: %w", id, err)
	}
	if err := s.removeBuild(ctx, id); err != nil {
		return err
	}
	if _, err := s.removeOrphans(ctx); err != nil {
		return fmt.Errorf("remove build %s: %w", id, err)
	}
	return nil
}

// removeBuild removes build id's record and log.
func (s *Store) removeBuild(ctx context.Context, id string) error {
	if err := validBuildID(id); err != nil {
		return fmt.Errorf("remove build: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := filepath.Join(s.builds, id+".json")
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove build %s: %w", id, ErrNotFound)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove build %s: %w", id, err)
	}
	if err := os.Remove(filepath.Join(s.builds, id+logSuffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove build %s: %w", id, err)
	}
	return nil
}

// TrimBuilds removes every build record but the keep newest (by start),
// with their logs, and logs whose record is gone. It returns how many
// records it removed and the bytes freed.
func (s *Store) TrimBuilds(ctx context.Context, keep int) (int, int64, error) {
	all, err := s.ListBuilds(ctx)
	if err != nil {
		return 0, 0, err
	}
	gone := all[min(keep, len(all)):]
	ids := map[string]bool{}
	for _, b := range gone {
		ids[b.ID] = true
	}
	if err := s.unpoint(ctx, ids); err != nil {
		return 0, 0, err
	}
	removed, freed := 0, int64(0)
	for _, b := range gone {
		freed += fileSize(filepath.Join(s.builds, b.ID+".json")) + fileSize(filepath.Join(s.builds, b.ID+logSuffix))
		if err := s.removeBuild(ctx, b.ID); err != nil && !errors.Is(err, ErrNotFound) {
			return removed, freed, err
		}
		removed++
	}
	n, err := s.removeOrphans(ctx)
	return removed, freed + n, err
}

// unpoint removes the build pointers naming the builds ids, before their
// records go: a pointer that exists then names a build that exists, so
// `builder fsck` running beside a removal sees no dangling pointer (one
// left by a crash between the two is removed by removeOrphans).
func (s *Store) unpoint(ctx context.Context, ids map[string]bool) error {
	return s.eachBuildFile(ctx, ".ref", func(name string) error {
		if p, ok := s.readPointer(name); ok && ids[p.ID] {
			if err := os.Remove(filepath.Join(s.builds, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	})
}

// removeOrphans removes the logs of builds whose record is gone, and the
// build pointers that name such a build (or no build), so that removing
// builds leaves nothing fsck would report.
func (s *Store) removeOrphans(ctx context.Context) (int64, error) {
	entries, err := os.ReadDir(s.builds)
	if err != nil {
		return 0, err
	}
	var freed int64
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return freed, err
		}
		id, ok := strings.CutSuffix(e.Name(), logSuffix)
		if !ok && strings.HasSuffix(e.Name(), ".ref") {
			p, valid := s.readPointer(e.Name())
			id, ok = p.ID, true
			if !valid {
				id = "" // names no build: dangling
			}
		}
		if !ok {
			continue
		}
		if _, err := os.Stat(filepath.Join(s.builds, id+".json")); id != "" && !errors.Is(err, os.ErrNotExist) {
			continue
		}
		p := filepath.Join(s.builds, e.Name())
		n := fileSize(p)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return freed, err
		}
		freed += n
	}
	return freed, nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// PutBuildLog stores the progress output of build id, replacing any
// earlier log. Like records, logs are not fsynced.
func (s *Store) PutBuildLog(ctx context.Context, id string, data []byte) error {
	if err := validBuildID(id); err != nil {
		return fmt.Errorf("put build log: %w", err)
	}
	if err := s.writeFile(ctx, s.builds, id+logSuffix, data, bestEffort); err != nil {
		return fmt.Errorf("put build log %s: %w", id, err)
	}
	return nil
}

// BuildLog returns the progress output of build id, or an error wrapping
// ErrNotFound when it has none.
func (s *Store) BuildLog(ctx context.Context, id string) ([]byte, error) {
	if err := validBuildID(id); err != nil {
		return nil, fmt.Errorf("build log: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(s.builds, id+logSuffix))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("build %s has no log: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("build log %s: %w", id, err)
	}
	return data, nil
}
