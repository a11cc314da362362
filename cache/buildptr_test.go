package cache

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestBuildPointers(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	put := func(id string, finished time.Time) {
		t.Helper()
		if err := s.PutBuild(ctx, &BuildRecord{ID: id, Project: "p", Finished: finished, ImageDigest: "sha256:i"}); err != nil {
			t.Fatal(err)
		}
	}
	put("new", t0.Add(time.Hour))
	put("old", t0) // finished earlier, stored later: must not win
	latest := func(want string) {
		t.Helper()
		b, err := s.LatestBuild(ctx, "p")
		if err != nil || b.ID != want {
			t.Fatalf("LatestBuild = %v, %v; want %s", b, err, want)
		}
		b, err = s.BuildForImage(ctx, "sha256:i")
		if err != nil || b.ID != want {
			t.Fatalf("BuildForImage = %v, %v; want %s", b, err, want)
		}
	}
	latest("new")
	if err := os.Remove(filepath.Join(s.builds, "new.json")); err != nil {
		t.Fatal(err)
	}
	latest("old") // dangling pointer: found by the scan
	if _, err := os.Stat(filepath.Join(s.builds, projectRef("p"))); !os.IsNotExist(err) {
		t.Errorf("dangling pointer kept: %v", err)
	}
	if err := os.WriteFile(filepath.Join(s.builds, projectRef("p")), []byte("{bad"), 0o600); err != nil {
		t.Fatal(err)
	}
	latest("old") // damaged pointer: ignored
}
