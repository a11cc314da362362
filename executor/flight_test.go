package executor

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/parser"
	"github.com/builder-dev/builder/planner"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Concurrent holders of one key run it once and all get its record; the
// others learn who ran it.
func TestFlightsRunOnce(t *testing.T) {
	f := NewFlights()
	key := cache.KeyOf(cache.Key{}, cache.Inputs{Op: "RUN"})
	var runs atomic.Int32
	release := make(chan struct{})
	want := &cache.Record{Key: key, DiffID: "sha256:x"}
	var wg sync.WaitGroup
	got := make([]*cache.Record, 4)
	shared := make([]string, 4)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := []string{"linux/amd64", "linux/arm64", "linux/s390x", "linux/ppc64le"}[i]
			var err error
			got[i], shared[i], err = f.do(t.Context(), key, name, func() (*cache.Record, error) {
				runs.Add(1)
				<-release
				return want, nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	close(release)
	wg.Wait()
	if runs.Load() != 1 {
		t.Fatalf("ran %d times, want once", runs.Load())
	}
	owners := 0
	for i := range got {
		if got[i] != want {
			t.Errorf("holder %d got %+v", i, got[i])
		}
		if shared[i] == "" {
			owners++
		}
	}
	if owners != 1 {
		t.Errorf("%d holders ran it themselves (shared %q), want 1", owners, shared)
	}
}

// A holder whose executing peer failed runs the step itself; a canceled
// waiter stops waiting.
func TestFlightsFailureAndCancel(t *testing.T) {
	f := NewFlights()
	key := cache.KeyOf(cache.Key{}, cache.Inputs{Op: "RUN"})
	boom := errors.New("boom")
	if _, _, err := f.do(t.Context(), key, "a", func() (*cache.Record, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("first run: %v", err)
	}
	rec, shared, err := f.do(t.Context(), key, "b", func() (*cache.Record, error) { return &cache.Record{Key: key}, nil })
	if err != nil || rec == nil || shared != "" {
		t.Errorf("after the peer failed: %+v %q %v, want its own run", rec, shared, err)
	}

	other := cache.KeyOf(cache.Key{}, cache.Inputs{Op: "COPY"})
	started, release := make(chan struct{}), make(chan struct{})
	go f.do(context.Background(), other, "a", func() (*cache.Record, error) { close(started); <-release; return nil, nil })
	<-started
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := f.do(ctx, other, "b", func() (*cache.Record, error) { t.Error("ran"); return nil, nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled waiter: %v", err)
	}
	close(release)
}

// The platforms of a multi-platform build share the steps a build-platform
// stage has before anything depends on the target: run once in all.
func TestRunPlatformsShareSteps(t *testing.T) {
	f := newFakeBuild(t)
	df, err := parser.Parse(strings.NewReader(`FROM --platform=$BUILDPLATFORM scratch AS build
RUN echo deps > /deps
ARG TARGETARCH
RUN echo $TARGETARCH > /out
FROM scratch
COPY --from=build /out /out
`), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	bctx, err := buildcontext.Open(f.ctxDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	host := v1.Platform{OS: "linux", Architecture: "amd64"}
	flights := NewFlights()
	targets := []v1.Platform{host, {OS: "linux", Architecture: "arm64"}}
	results := make([]*Result, len(targets))
	var wg sync.WaitGroup
	for i, p := range targets {
		plan, err := planner.New(t.Context(), df, planner.Options{DockerfilePath: "Dockerfile", Platform: p, BuildPlatform: host})
		if err != nil {
			t.Fatal(err)
		}
		opts := Options{
			Cache: f.cache, Layers: f.layers, Snapshotter: f.sn, Images: fakeImages{},
			Mounter: &fakeMounter{}, Sandbox: f.sandbox, Context: bctx, DockerfilePath: "Dockerfile",
			Project: "p " + planner.FormatPlatform(p), Progress: &recorder{}, TempDir: t.TempDir(),
			Flights: flights, Name: planner.FormatPlatform(p), MultiPlatform: true, TargetPlatform: &targets[i],
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if results[i], err = New(opts).Run(t.Context(), plan); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	count := map[string]int{}
	for _, c := range f.sandbox.commands() {
		count[c]++
	}
	if count["echo deps > /deps"] != 1 || count["echo $TARGETARCH > /out"] != 2 {
		t.Errorf("commands run %v: want the target-independent RUN once, the TARGETARCH one per platform", count)
	}
	shared := 0
	for i, res := range results {
		cfg, err := res.Image.ConfigFile()
		if err != nil || cfg.Architecture != targets[i].Architecture {
			t.Errorf("platform %d image: %+v %v", i, cfg, err)
		}
		for _, s := range res.Record.Steps {
			if strings.HasPrefix(s.Reason, "run once in this build, for linux/") {
				shared++
				if !strings.HasPrefix(s.Name, "[linux/amd64 build ") {
					t.Errorf("shared step named %q, want its stage's platform in the label", s.Name)
				}
			}
		}
	}
	// The second platform takes the step from the first, or (when the
	// first had stored it before the second looked) from the cache.
	if shared > 1 {
		t.Errorf("%d step records say they were shared, want at most 1", shared)
	}
}
