package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/executor"
	"github.com/google/go-cmp/cmp"
)

// TestRetrySourceChanged: a build whose sources changed while it ran runs
// again, at most sourceRetries more times, each time with a notice; any
// other error, and a cancelled build, is returned at once.
func TestRetrySourceChanged(t *testing.T) {
	changed := &executor.StepError{Path: "Dockerfile", Line: 3, Instruction: "COPY f /f",
		Err: fmt.Errorf("copy to /f: %w", executor.ErrSourceChanged)}
	other := errors.New("exit code 1")
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	for _, c := range []struct {
		name    string
		ctx     context.Context
		errs    []error // what each run returns; the last one repeats
		runs    int
		wantErr error
	}{
		{"succeeds", t.Context(), []error{nil}, 1, nil},
		{"changed once", t.Context(), []error{changed, nil}, 2, nil},
		{"keeps changing", t.Context(), []error{changed}, 1 + sourceRetries, executor.ErrSourceChanged},
		{"other error", t.Context(), []error{other}, 1, other},
		{"changed, then another error", t.Context(), []error{changed, other}, 2, other},
		{"cancelled", cancelled, []error{changed}, 1, executor.ErrSourceChanged},
	} {
		t.Run(c.name, func(t *testing.T) {
			runs := 0
			var notices []string
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			res, err := retrySourceChanged(c.ctx, func() (*executor.Result, error) {
				err := c.errs[min(runs, len(c.errs)-1)]
				runs++
				return &executor.Result{Record: &cache.BuildRecord{Started: start.Add(time.Duration(runs) * time.Minute)}}, err
			}, func(msg string) { notices = append(notices, msg) })
			if want := start.Add(time.Minute); !res.Record.Started.Equal(want) {
				t.Errorf("record started %v, want the first run's %v", res.Record.Started, want)
			}
			if runs != c.runs {
				t.Errorf("%d runs, want %d", runs, c.runs)
			}
			if (c.wantErr == nil) != (err == nil) || (c.wantErr != nil && !errors.Is(err, c.wantErr)) {
				t.Errorf("error %v, want %v", err, c.wantErr)
			}
			if len(notices) != runs-1 {
				t.Errorf("%d notices for %d runs: %q", len(notices), runs, notices)
			}
			for _, n := range notices {
				if !strings.Contains(n, "Dockerfile:3") || !strings.HasSuffix(n, "building again") {
					t.Errorf("notice %q does not name the step and say it builds again", n)
				}
			}
		})
	}
}

// TestRetrySourceChangedRecord: the record of a build that ran again
// counts the steps an earlier run ran as run, not as reused from the
// cache: the later run found them there because the earlier one made them.
// A step the earlier run failed (nothing committed) is not among them.
func TestRetrySourceChangedRecord(t *testing.T) {
	changed := fmt.Errorf("copy to /f: %w", executor.ErrSourceChanged)
	k := func(s string) cache.Key { return cache.KeyOf(cache.Key{}, cache.Inputs{Op: s}) }
	runs := [][]cache.StepRecord{
		{
			{Instruction: "RUN sleep 3", Key: k("run"), Cache: "miss", Reason: "no earlier build", DurationMS: 3000, Layer: "sha256:r"},
			{Instruction: "COPY f /f", Key: k("copy-old"), Cache: "miss", Reason: "no earlier build", DurationMS: 5},
		},
		{
			{Instruction: "RUN sleep 3", Key: k("run"), Cache: "hit", DurationMS: 1, Layer: "sha256:r", SavedMS: 3000},
			{Instruction: "COPY f /f", Key: k("copy-old"), Cache: "hit", DurationMS: 1, Layer: "sha256:o", SavedMS: 7},
			{Instruction: "COPY g /g", Key: k("copy-new"), Cache: "miss", Reason: "no earlier build", DurationMS: 6, Layer: "sha256:n"},
		},
	}
	n := 0
	res, err := retrySourceChanged(t.Context(), func() (*executor.Result, error) {
		steps := runs[n]
		n++
		if n == 1 {
			return &executor.Result{Record: &cache.BuildRecord{Steps: steps}}, changed
		}
		return &executor.Result{Record: &cache.BuildRecord{Steps: steps}}, nil
	}, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	want := []cache.StepRecord{
		{Instruction: "RUN sleep 3", Key: k("run"), Cache: "miss", Reason: "no earlier build", DurationMS: 3000, Layer: "sha256:r"},
		// The first run failed this one: the hit is an older build's.
		{Instruction: "COPY f /f", Key: k("copy-old"), Cache: "hit", DurationMS: 1, Layer: "sha256:o", SavedMS: 7},
		{Instruction: "COPY g /g", Key: k("copy-new"), Cache: "miss", Reason: "no earlier build", DurationMS: 6, Layer: "sha256:n"},
	}
	if diff := cmp.Diff(want, res.Record.Steps); diff != "" {
		t.Errorf("record steps (-want +got):\n%s", diff)
	}
	if r := roiOf(res.Record); r.run != 2 || r.reused != 1 {
		t.Errorf("summary counts %d run, %d reused; want 2 and 1", r.run, r.reused)
	}
}
