package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/parser"
	"github.com/builder-dev/builder/planner"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fakeBuild is one store of fakes and a build context that several Runs
// share, as successive builds of a project share a builder root.
type fakeBuild struct {
	t       *testing.T
	ctxDir  string
	cache   *fakeCache
	layers  *fakeLayers
	sn      *fakeSnapshotter
	sandbox *fakeSandbox
	// remote is consulted as --cache-from when set.
	remote RemoteCache
	// images are the base images FROM and COPY --from can name.
	images map[string]v1.Image
}

func newFakeBuild(t *testing.T) *fakeBuild {
	t.Helper()
	l := newFakeLayers(t)
	return &fakeBuild{t: t, ctxDir: t.TempDir(), cache: newFakeCache(t), layers: l,
		sn: newFakeSnapshotter(t, l), sandbox: &fakeSandbox{}}
}

// write puts a file into the build context.
func (f *fakeBuild) write(name, content string) {
	f.t.Helper()
	p := filepath.Join(f.ctxDir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// run plans and builds dockerfile (with %[1]d and %[2]d standing for the
// caller's uid and gid, which COPY --chown needs without root) and keeps
// its record as the project's latest build.
func (f *fakeBuild) run(dockerfile string, mod ...func(*Options)) (*Result, *recorder, error) {
	f.t.Helper()
	df, err := parser.Parse(strings.NewReader(ids(dockerfile)), "Dockerfile")
	if err != nil {
		f.t.Fatal(err)
	}
	linux := v1.Platform{OS: "linux", Architecture: "amd64"}
	plan, err := planner.New(f.t.Context(), df, planner.Options{DockerfilePath: "Dockerfile", Platform: linux, BuildPlatform: linux,
		ResolveImage: f.resolveImage})
	if err != nil {
		f.t.Fatal(err)
	}
	bctx, err := buildcontext.Open(f.ctxDir, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	rec := &recorder{}
	opts := Options{
		Cache: f.cache, Layers: f.layers, Snapshotter: f.sn, Images: fakeImages{images: f.images},
		Mounter: &fakeMounter{}, Sandbox: f.sandbox,
		Context: bctx, DockerfilePath: "Dockerfile", Project: "p",
		Progress: rec, TempDir: f.t.TempDir(),
	}
	if f.remote != nil {
		opts.CacheFrom = []RemoteCache{f.remote}
	}
	for _, m := range mod {
		m(&opts)
	}
	res, err := New(opts).Run(f.t.Context(), plan)
	if res == nil {
		f.t.Fatalf("Run returned no result (err %v)", err)
	}
	f.cache.mu.Lock()
	f.cache.builds["p"] = res.Record
	f.cache.mu.Unlock()
	return res, rec, err
}

// addImage makes img the base image name (and its digest) resolves to.
func (f *fakeBuild) addImage(name string, img v1.Image) {
	f.t.Helper()
	d, err := img.Digest()
	if err != nil {
		f.t.Fatal(err)
	}
	if f.images == nil {
		f.images = map[string]v1.Image{}
	}
	f.images[name], f.images[d.String()] = img, img
}

// resolveImage resolves the names of f.images (addImage).
func (f *fakeBuild) resolveImage(_ context.Context, ref string, _ v1.Platform) (*planner.ImageInfo, error) {
	img, ok := f.images[ref]
	if !ok {
		return nil, fmt.Errorf("image %s not found", ref)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	return &planner.ImageInfo{Ref: ref, Digest: d.String(), Config: cfg}, nil
}

// mustRun is run that fails the test on a build error.
func (f *fakeBuild) mustRun(dockerfile string, mod ...func(*Options)) (*Result, *recorder) {
	f.t.Helper()
	res, rec, err := f.run(dockerfile, mod...)
	if err != nil {
		f.t.Fatalf("build: %v", err)
	}
	return res, rec
}

// ids replaces %[1]d and %[2]d in s with the caller's uid and gid.
func ids(s string) string {
	return strings.NewReplacer("%[1]d", strconv.Itoa(os.Getuid()), "%[2]d", strconv.Itoa(os.Getgid())).Replace(s)
}

// recorder is a Progress that keeps every event.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) Event(ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorder) Output(Event) io.Writer { return io.Discard }

// steps returns "INSTRUCTION: hit|miss (reason)" per step with a key, in
// plan order, from the build record.
func steps(res *Result) []string {
	var out []string
	for _, s := range res.Record.Steps {
		if s.Key.IsZero() || (s.Inputs != nil && s.Inputs.Op == "FROM") {
			continue
		}
		line := s.Instruction + ": " + s.Cache
		if s.Reason != "" {
			line += " (" + s.Reason + ")"
		}
		out = append(out, line)
	}
	return out
}

func wantSteps(t *testing.T, res *Result, want ...string) {
	t.Helper()
	got := steps(res)
	for i := range want {
		want[i] = ids(want[i])
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("steps:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestRunHitsAndMisses(t *testing.T) {
	const df = `FROM scratch
COPY --chown=%[1]d:%[2]d a.txt /a.txt
RUN echo one > /one
ENV X=1
RUN echo two > /two
`
	f := newFakeBuild(t)
	f.write("a.txt", "a")
	first, _ := f.mustRun(df)
	wantSteps(t, first,
		"COPY --chown=%[1]d:%[2]d a.txt /a.txt: miss (no earlier build)",
		"RUN echo one > /one: miss (no earlier build)",
		"RUN echo two > /two: miss (no earlier build)")
	if n := len(f.sandbox.commands()); n != 2 {
		t.Fatalf("first build ran %d RUNs, want 2", n)
	}
	cfg, err := first.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != 3 {
		t.Errorf("image has %d layers, want 3", len(cfg.RootFS.DiffIDs))
	}

	second, _ := f.mustRun(df)
	wantSteps(t, second,
		"COPY --chown=%[1]d:%[2]d a.txt /a.txt: hit",
		"RUN echo one > /one: hit",
		"RUN echo two > /two: hit")
	if n := len(f.sandbox.commands()); n != 2 {
		t.Errorf("a cached rebuild ran RUN: %v", f.sandbox.commands()[2:])
	}
	d1, _ := first.Image.ConfigFile()
	d2, _ := second.Image.ConfigFile()
	if fmt.Sprint(d1.RootFS.DiffIDs) != fmt.Sprint(d2.RootFS.DiffIDs) {
		t.Errorf("cached rebuild has other layers: %v, want %v", d2.RootFS.DiffIDs, d1.RootFS.DiffIDs)
	}
	if len(second.History) != len(d2.History) {
		t.Errorf("History has %d entries for %d history entries", len(second.History), len(d2.History))
	}
}

// TestRunMissExplanations checks each reason a step can miss for.
func TestRunMissExplanations(t *testing.T) {
	const base = `FROM scratch
COPY --chown=%[1]d:%[2]d a.txt /a.txt
RUN echo one > /one
`
	tests := []struct {
		name   string
		second string
		change func(*fakeBuild, *Result)
		opts   func(*Options)
		want   []string
	}{{
		name:   "file content",
		second: base,
		change: func(f *fakeBuild, _ *Result) { f.write("a.txt", "changed") },
		want: []string{
			"COPY --chown=%[1]d:%[2]d a.txt /a.txt: miss (a.txt content changed)",
			"RUN echo one > /one: miss (parent step rebuilt (line 2))",
		},
	}, {
		name:   "instruction changed",
		second: strings.Replace(base, "echo one", "echo uno", 1),
		want: []string{
			"COPY --chown=%[1]d:%[2]d a.txt /a.txt: hit",
			"RUN echo uno > /one: miss (instruction changed)",
		},
	}, {
		name:   "env changed",
		second: strings.Replace(base, "RUN", "ENV V=2\nRUN", 1),
		want: []string{
			"COPY --chown=%[1]d:%[2]d a.txt /a.txt: hit",
			"RUN echo one > /one: miss (env V changed (unset → 2))",
		},
	}, {
		name:   "no-cache",
		second: base,
		opts:   func(o *Options) { o.NoCache = true },
		want: []string{
			"COPY --chown=%[1]d:%[2]d a.txt /a.txt: miss (--no-cache)",
			"RUN echo one > /one: miss (--no-cache)",
		},
	}, {
		name:   "no-cache-filter",
		second: strings.Replace(base, "FROM scratch", "FROM scratch AS app", 1),
		opts:   func(o *Options) { o.NoCacheStages = []string{"app"} },
		want: []string{
			"COPY --chown=%[1]d:%[2]d a.txt /a.txt: miss (--no-cache-filter)",
			"RUN echo one > /one: miss (--no-cache-filter)",
		},
	}, {
		name:   "entry missing",
		second: base,
		change: func(f *fakeBuild, first *Result) {
			// The RUN's layer was pruned: its record no longer hits.
			f.layers.forget(first.Record.Steps[len(first.Record.Steps)-1].Layer)
		},
		want: []string{
			"COPY --chown=%[1]d:%[2]d a.txt /a.txt: hit",
			"RUN echo one > /one: miss (cache entry missing (pruned, corrupt or from another store))",
		},
	}, {
		name:   "new step",
		second: base + "RUN echo two > /two\n",
		want: []string{
			"COPY --chown=%[1]d:%[2]d a.txt /a.txt: hit",
			"RUN echo one > /one: hit",
			"RUN echo two > /two: miss (step not in the earlier build)",
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeBuild(t)
			f.write("a.txt", "a")
			first, _ := f.mustRun(base)
			if tt.change != nil {
				tt.change(f, first)
			}
			var mods []func(*Options)
			if tt.opts != nil {
				mods = append(mods, tt.opts)
			}
			res, _ := f.mustRun(tt.second, mods...)
			wantSteps(t, res, tt.want...)
		})
	}
}

// TestRunFromRemoteCache checks that a local miss held by an imported
// cache is a hit that names it, and runs nothing.
func TestRunFromRemoteCache(t *testing.T) {
	const df = "FROM scratch\nRUN echo one > /one\n"
	src := newFakeBuild(t)
	src.mustRun(df)
	f := newFakeBuild(t)
	f.layers = src.layers
	f.sn = newFakeSnapshotter(t, src.layers)
	f.remote = fakeRemote{src.cache}
	res, _ := f.mustRun(df)
	wantSteps(t, res, "RUN echo one > /one: hit (from fake-remote)")
	if len(f.sandbox.commands()) != 0 {
		t.Errorf("a remote hit ran %v", f.sandbox.commands())
	}
}

type fakeRemote struct{ c *fakeCache }

func (r fakeRemote) Fetch(ctx context.Context, k cache.Key) (*cache.Record, error) {
	return r.c.Lookup(ctx, k)
}
func (fakeRemote) Source() string { return "fake-remote" }

// TestRunParallelStages checks that independent stages run at the same
// time: each RUN waits for the other's signal, so a build that ran them
// one after the other would never finish.
func TestRunParallelStages(t *testing.T) {
	const df = `FROM scratch AS a
RUN signal a
RUN sleep-until b
RUN echo a > /a

FROM scratch AS b
RUN signal b
RUN sleep-until a
RUN echo b > /b

FROM scratch
COPY --from=a --chown=%[1]d:%[2]d /a /a
COPY --from=b --chown=%[1]d:%[2]d /b /b
`
	f := newFakeBuild(t)
	done := make(chan error, 1)
	var res *Result
	go func() {
		var err error
		res, _, err = f.run(df)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("stages a and b did not run in parallel (build blocked)")
	}
	cfg, err := res.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != 2 {
		t.Errorf("final image has %d layers, want 2", len(cfg.RootFS.DiffIDs))
	}
	// Records come in plan order whatever the order the stages ran in.
	var stages []string
	for _, s := range res.Record.Steps {
		if len(stages) == 0 || stages[len(stages)-1] != s.Stage {
			stages = append(stages, s.Stage)
		}
	}
	if got := strings.Join(stages, ","); got != "a,b,stage-2" {
		t.Errorf("record's stage order %s, want a,b,stage-2", got)
	}
}

// A COPY --from step starts (in progress, and so in its duration) once its
// source stage is built, not while it waits for it.
func TestRunCopyFromStartsAfterSource(t *testing.T) {
	f := newFakeBuild(t)
	_, rec := f.mustRun(`FROM scratch AS a
RUN sleep-until go
RUN echo a > /a

FROM scratch AS b
RUN signal go
RUN echo b > /b

FROM scratch
COPY --from=a --chown=%[1]d:%[2]d /a /a
COPY --from=b --chown=%[1]d:%[2]d /b /b
`)
	sourceDone, copyStarted := -1, -1
	for i, ev := range rec.events {
		switch {
		case ev.Kind == StepDone && ev.Instruction == "RUN echo a > /a":
			sourceDone = i
		case ev.Kind == StepStarted && strings.HasPrefix(ev.Instruction, "COPY --from=a"):
			copyStarted = i
		}
	}
	if sourceDone < 0 || copyStarted < sourceDone {
		t.Errorf("COPY --from=a started at event %d, its source stage finished at %d: want it to start after", copyStarted, sourceDone)
	}
}

// Steps that only change the config are neither hits nor misses, on a
// cold build or any other.
func TestRunMetadataStepsAreNotHits(t *testing.T) {
	f := newFakeBuild(t)
	f.write("a", "a")
	for range 2 {
		res, _ := f.mustRun("FROM scratch\nENV A=1\nLABEL l=v\nCOPY a /a\n")
		for _, s := range res.Record.Steps {
			if strings.HasPrefix(s.Instruction, "ENV") || strings.HasPrefix(s.Instruction, "LABEL") {
				if s.Cache != CacheNone || !s.Key.IsZero() {
					t.Errorf("%s: cache %q key %s, want %q and no key", s.Instruction, s.Cache, s.Key, CacheNone)
				}
			}
		}
	}
}

// TestRunErrorNamesLine checks that a failing step's error names the
// Dockerfile line and instruction, and that the record is still returned.
func TestRunErrorNamesLine(t *testing.T) {
	tests := []struct {
		name, df, want string
	}{
		{"run exits", "FROM scratch\nENV A=1\nRUN exit 3\n",
			`Dockerfile:3: RUN exit 3: process "/bin/sh -c exit 3" did not complete successfully: exit code: 3`},
		{"copy missing file", "FROM scratch\n\nCOPY --chown=%[1]d:%[2]d missing.txt /\n",
			"Dockerfile:3: COPY --chown=%[1]d:%[2]d missing.txt /: "},
		{"failing dependency", "FROM scratch AS dep\nRUN exit 7\nFROM scratch\nCOPY --from=dep --chown=%[1]d:%[2]d /x /x\n",
			"Dockerfile:2: RUN exit 7: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeBuild(t)
			res, _, err := f.run(tt.df)
			if err == nil {
				t.Fatal("build succeeded")
			}
			var se *StepError
			if !errors.As(err, &se) {
				t.Fatalf("error %T %v is not a StepError", err, err)
			}
			if want := ids(tt.want); !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q, want prefix %q", err, want)
			}
			if res.Record == nil || len(res.Record.Steps) == 0 {
				t.Error("a failed build returned no record")
			}
		})
	}
}

// TestRunStageFromStage builds a stage FROM another stage with more steps
// than its parent: the child computes its own progress labels (a child
// that kept its parent's indexed past their end and panicked).
func TestRunStageFromStage(t *testing.T) {
	const df = `FROM scratch AS parent
RUN echo p > /p

FROM parent AS child
RUN echo c1 > /c1
RUN echo c2 > /c2
USER %[1]d:%[2]d
WORKDIR /w
RUN echo c3 > /c3
`
	f := newFakeBuild(t)
	res, rec := f.mustRun(df)
	cfg, err := res.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != 5 {
		t.Errorf("child image has %d layers, want the parent's 1 and its own 4", len(cfg.RootFS.DiffIDs))
	}
	labels := map[string]bool{}
	for _, ev := range rec.events {
		if ev.Stage == "child" && ev.Kind == StepDone && !ev.Metadata {
			labels[ev.Label] = true
		}
	}
	for _, want := range []string{"[child 1/4]", "[child 2/4]", "[child 3/4]", "[child 4/4]"} {
		if !labels[want] {
			t.Errorf("no child step labelled %s (labels %v)", want, labels)
		}
	}
	// A rebuild hits everywhere; a changed parent explains the child's miss.
	again, _ := f.mustRun(df)
	for _, s := range steps(again) {
		if !strings.HasSuffix(s, ": hit") {
			t.Errorf("rebuild: %s", s)
		}
	}
	changed, _ := f.mustRun(strings.Replace(df, "echo p", "echo q", 1))
	wantSteps(t, changed,
		"RUN echo q > /p: miss (instruction changed)",
		"RUN echo c1 > /c1: miss (base stage parent rebuilt)",
		"RUN echo c2 > /c2: miss (parent step rebuilt (line 5))",
		"WORKDIR /w: miss (parent step rebuilt (line 6))",
		"RUN echo c3 > /c3: miss (parent step rebuilt (line 8))")
}
