package cache

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func putBuilds(t *testing.T, s *Store, ids ...string) []*BuildRecord {
	t.Helper()
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	var out []*BuildRecord
	for i, id := range ids {
		b := &BuildRecord{ID: id, Project: "p", Started: t0.Add(time.Duration(i) * time.Minute),
			Finished: t0.Add(time.Duration(i)*time.Minute + time.Second), Status: BuildCompleted}
		if err := s.PutBuild(t.Context(), b); err != nil {
			t.Fatal(err)
		}
		if err := s.PutBuildLog(t.Context(), id, []byte("#1 log of "+id+"\n")); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func buildIDs(bs []*BuildRecord) string {
	var ids []string
	for _, b := range bs {
		ids = append(ids, b.ID)
	}
	return strings.Join(ids, ",")
}

func TestListAndFindBuilds(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	putBuilds(t, s, "aaa111", "aab222", "bbb333")
	all, err := s.ListBuilds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := buildIDs(all); got != "bbb333,aab222,aaa111" {
		t.Errorf("ListBuilds = %s, want newest first", got)
	}
	for ref, want := range map[string]string{"latest": "bbb333", "aaa111": "aaa111", "aab": "aab222", "b": "bbb333"} {
		b, err := s.FindBuild(ctx, ref)
		if err != nil || b.ID != want {
			t.Errorf("FindBuild(%q) = %v, %v; want %s", ref, b, err, want)
		}
	}
	if _, err := s.FindBuild(ctx, "aa"); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("FindBuild(aa): %v, want an ambiguous prefix error", err)
	}
	if _, err := s.FindBuild(ctx, "ccc"); !errors.Is(err, ErrNotFound) {
		t.Errorf("FindBuild(ccc): %v, want ErrNotFound", err)
	}
	log, err := s.BuildLog(ctx, "aab222")
	if err != nil || string(log) != "#1 log of aab222\n" {
		t.Errorf("BuildLog = %q, %v", log, err)
	}
}

// noBuildProblems fails t if fsck finds a build record or pointer to
// report (a pointer left naming a removed build).
func noBuildProblems(t *testing.T, s *Store, after string) {
	t.Helper()
	probs, err := s.FsckBuilds(t.Context(), FsckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("after %s: fsck: %s: %s", after, p.Path, p.What)
	}
}

func TestRemoveAndTrimBuilds(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	for _, b := range putBuilds(t, s, "b1", "b2", "b3", "b4") {
		b.ImageDigest = "sha256:" + strings.Repeat(b.ID[1:], 64) // a pointer per image
		if err := s.PutBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RemoveBuild(ctx, "b2"); err != nil {
		t.Fatal(err)
	}
	noBuildProblems(t, s, "RemoveBuild")
	if _, err := s.BuildLog(ctx, "b2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("log of a removed build: %v, want ErrNotFound", err)
	}
	if err := s.RemoveBuild(ctx, "b2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing b2 twice: %v, want ErrNotFound", err)
	}
	// A log without its record (a record removed by an older prune) goes too.
	if err := os.WriteFile(filepath.Join(s.builds, "orphan"+logSuffix), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, freed, err := s.TrimBuilds(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || freed <= 0 {
		t.Errorf("TrimBuilds(1) removed %d (%d bytes), want 2", n, freed)
	}
	all, _ := s.ListBuilds(ctx)
	if got := buildIDs(all); got != "b4" {
		t.Errorf("after TrimBuilds(1): %s, want b4", got)
	}
	noBuildProblems(t, s, "TrimBuilds")
	entries, _ := os.ReadDir(s.builds)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), logSuffix) && e.Name() != "b4"+logSuffix {
			t.Errorf("log %s survived", e.Name())
		}
	}
	if b, err := s.LatestBuild(ctx, "p"); err != nil || b.ID != "b4" {
		t.Errorf("LatestBuild after trim = %v, %v", b, err)
	}
	if n, _, err := s.TrimBuilds(ctx, 0); err != nil || n != 1 {
		t.Errorf("TrimBuilds(0) = %d, %v; want 1", n, err)
	}
}
