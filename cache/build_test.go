package cache

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestBuildRecords(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	in := &Inputs{Op: "RUN", Fields: []Field{{Name: "arg.VERSION", Value: "1.2"}}}
	builds := []*BuildRecord{
		{ID: "b1", Project: "p", Started: t0, Finished: t0.Add(time.Minute), ImageDigest: "sha256:i1",
			Steps: []StepRecord{{Stage: "0", Line: 3, Instruction: "RUN make", Key: KeyOf(Key{}, *in), Inputs: in, Cache: "miss", Reason: "no earlier build of this step", DurationMS: 1200, Layer: "sha256:l1"}}},
		{ID: "b2", Project: "p", Started: t0.Add(time.Hour), Finished: t0.Add(2 * time.Hour), ImageDigest: "sha256:i2"},
		{ID: "b3", Project: "p", Started: t0.Add(3 * time.Hour)}, // running or failed
		{ID: "b4", Project: "other", Started: t0, Finished: t0.Add(5 * time.Hour), ImageDigest: "sha256:i1"},
	}
	for _, b := range builds {
		if err := s.PutBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.LatestBuild(ctx, "p")
	if err != nil || got.ID != "b2" {
		t.Fatalf("LatestBuild(p) = %+v, %v; want b2", got, err)
	}
	got, err = s.BuildForImage(ctx, "sha256:i1")
	if err != nil || got.ID != "b4" {
		t.Fatalf("BuildForImage(i1) = %+v, %v; want b4", got, err)
	}
	got, err = s.GetBuild(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(builds[0], got); diff != "" {
		t.Errorf("GetBuild(b1) mismatch (-want +got):\n%s", diff)
	}
	if _, err := s.LatestBuild(ctx, "nosuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("LatestBuild(nosuch): %v, want ErrNotFound", err)
	}
	if _, err := s.BuildForImage(ctx, "sha256:none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("BuildForImage(none): %v, want ErrNotFound", err)
	}
	for _, id := range []string{"", "../x", "a/b", ".hidden"} {
		if err := s.PutBuild(ctx, &BuildRecord{ID: id}); err == nil {
			t.Errorf("PutBuild(id=%q) succeeded", id)
		}
	}
}
