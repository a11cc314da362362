// Package executor walks a build plan: it computes each step's cache key,
// reuses cached results, runs the steps that miss (RUN in a sandbox, COPY and
// ADD into a snapshot) and evolves the image config, producing the final
// image and a build record that explains every cache miss.
package executor

import (
	"context"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/planner"
	"github.com/builder-dev/builder/snapshot"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"
)

// Options wire an Executor to its stores. Cache, Layers, Snapshotter and
// Images are required.
type Options struct {
	Cache       CacheStore
	Layers      LayerStore
	Snapshotter snapshot.Snapshotter
	Images      ImageStore
	// Mounter mounts the snapshots' roots; nil uses the kernel's mounts.
	Mounter Mounter
	// Sandbox runs RUN's processes; nil uses internal/sandbox.
	Sandbox Sandbox
	// Context is the build context; nil when the build has none (-f - with
	// no context files needed).
	Context        *buildcontext.Context
	DockerfilePath string
	// Project identifies "this Dockerfile in this context with this target"
	// so a build can be compared with the previous one of the same project.
	Project string
	// NoCache rebuilds every step; NoCacheStages only the named stages.
	NoCache       bool
	NoCacheStages []string
	// Network is the default network mode of RUN: sandbox.NetworkPrivate,
	// NetworkHost or NetworkNone.
	Network string
	// AllowNetworkHost permits RUN --network=host (the network.host
	// entitlement).
	AllowNetworkHost bool
	// ExtraHosts are "NAME IP" lines added to RUN's /etc/hosts
	// (--add-host); they are part of RUN keys.
	ExtraHosts []string
	// AllowInsecure permits RUN --security=insecure (the
	// security.insecure entitlement).
	AllowInsecure bool
	// Labels are added to the final image's config (--label).
	Labels map[string]string
	// SourceDateEpoch, when set, clamps every timestamp (SOURCE_DATE_EPOCH).
	SourceDateEpoch *time.Time
	Progress        Progress
	HTTPClient      *http.Client
	// GitAdvice lets git print its advice while ADD fetches a Git
	// source (BUILDKIT_GIT_ADVICE=1).
	GitAdvice bool
	// SSH are the agents of RUN --mount=type=ssh by id (--ssh); "default"
	// also authenticates ADD of ssh Git URLs.
	SSH map[string]SSHAgent
	// Secrets are the values of RUN --mount=type=secret by id (--secret).
	// They reach only the RUN sandboxes: never a layer, key or record.
	Secrets map[string][]byte
	// CacheFrom are imported caches consulted, in order, on a local miss
	// (--cache-from).
	CacheFrom []RemoteCache
	// TempDir holds mount points and downloads; it must be on the same
	// machine, and is removed by the caller.
	TempDir string
	// Hostname is the hostname of RUN steps (BUILDKIT_SANDBOX_HOSTNAME);
	// the sandbox's default when empty. A hostname is part of RUN keys.
	Hostname string
	// Isolation is the sandbox's isolation of RUN steps
	// (sandbox.IsolationNamespaces when empty); not part of any key. With
	// sandbox.IsolationChroot nothing is mounted: snapshots must be plain
	// directories (the copy snapshotter).
	Isolation string
	// Limits are the resource limits of every RUN (--memory, --cpus,
	// --pids-limit, --shm-size, --ulimit...), never part of a key;
	// Cgroups carries those that need a cgroup.
	Limits  sandbox.Limits
	Cgroups *sandbox.Cgroups
	// Flights, shared by the concurrent Runs of one multi-platform build,
	// runs a step they have in common once; Name names this Run (its
	// platform) to the others. Nil: no sharing.
	Flights *Flights
	Name    string
	// MultiPlatform prefixes progress labels with each stage's platform
	// ("[linux/arm64 build 1/2]"), as BuildKit does when several
	// platforms are built.
	MultiPlatform bool
	// TargetPlatform is the platform asked for (--platform), nil when
	// none was: the final image is then for that platform whatever its
	// base's, as BuildKit's frontend writes it.
	TargetPlatform *v1.Platform
	// CanRun says whether programs of a platform run here, natively or
	// under a binfmt_misc emulator (an error says what to install); nil
	// asks this machine (emulation.Detect).
	CanRun func(v1.Platform) error
}

// Executor runs plans. It is safe to call Run once per Executor.
type Executor struct {
	opts Options
}

// New returns an Executor.
func New(opts Options) *Executor {
	if opts.Progress == nil {
		opts.Progress = discardProgress{}
	}
	if opts.Network == "" {
		opts.Network = sandbox.NetworkNone
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if opts.TempDir == "" {
		opts.TempDir = os.TempDir()
	}
	if opts.Mounter == nil {
		opts.Mounter = kernelMounts{}
	}
	if opts.Sandbox == nil {
		opts.Sandbox = processSandbox{}
	}
	if opts.CanRun == nil {
		opts.CanRun = hostCanRun
	}
	if opts.MultiPlatform {
		opts.Progress = platformProgress{opts.Progress, opts.Name}
	}
	return &Executor{opts: opts}
}

// Result is a finished build.
type Result struct {
	Image  v1.Image
	Record *cache.BuildRecord
	// History maps each entry of the image's config history to the index
	// in Record.Steps of the step that made it, or -1 (base image entries).
	History []int
	// WindowsLayers[i] reports whether the image's layer i is in the
	// Windows layer format, its files below Files/ (a Windows base
	// image's layers, those of steps on it); nil when none is.
	// exporter.WindowsFiles reads the image's files so.
	WindowsLayers []bool
}

// Run executes the plan and returns the target stage's image: it keys
// every stage (in parallel, running nothing), then builds the target and
// the stages it turns out to need, independent ones in parallel (see
// lazy.go). The build record is returned and stored even when the build
// fails.
func (e *Executor) Run(ctx context.Context, plan *planner.Plan) (*Result, error) {
	b := &build{
		e:           e,
		plan:        plan,
		namesStages: namesStages(plan),
		stages:      map[int]*stageRun{},
		record: &cache.BuildRecord{
			ID:      newID(),
			Project: e.opts.Project,
			Target:  plan.Target.Name,
			Started: time.Now().UTC(),
		},
	}
	for _, st := range plan.Stages {
		b.stages[st.Index] = newStageRun(st)
	}
	if err := b.checkPlatforms(); err != nil {
		return &Result{Record: b.record}, err
	}
	b.volatile = b.volatileStages()
	g, gctx := errgroup.WithContext(ctx)
	b.g, b.gctx = g, gctx
	for _, st := range plan.Stages {
		g.Go(func() error { return b.keyStage(gctx, st) })
	}
	b.need(plan.Target.Index)
	err := g.Wait()
	b.closePrepared() // temporary downloads and checkouts: nothing to report
	if err != nil && b.firstErr != nil {
		err = b.firstErr
	}
	if err == nil {
		b.reportUnbuilt(ctx)
	}
	var refs []stepRef
	b.record.Steps, refs = b.sortedSteps()
	b.record.Finished = time.Now().UTC()
	if err != nil {
		return &Result{Record: b.record}, err
	}
	final := b.stages[plan.Target.Index].res
	img, err := b.finalImage(final)
	if err != nil {
		return &Result{Record: b.record}, err
	}
	return &Result{Image: img, Record: b.record, History: historyIndex(final.hist, refs), WindowsLayers: windowsLayers(final.layers)}, nil
}

// historyIndex maps history entries to step record indexes.
func historyIndex(hist, steps []stepRef) []int {
	pos := map[stepRef]int{}
	for i, r := range steps {
		pos[r] = i
	}
	out := make([]int, len(hist))
	for i, h := range hist {
		out[i] = -1
		if p, ok := pos[h]; ok && h.stage >= 0 {
			out[i] = p
		}
	}
	return out
}

// build is the state of one Run.
type build struct {
	e    *Executor
	plan *planner.Plan
	// namesStages: step labels name their stage (namesStages).
	namesStages bool
	stages      map[int]*stageRun
	// g runs the passes' goroutines; gctx is its context.
	g    *errgroup.Group
	gctx context.Context
	// volatile are the stages not to take from the cache (volatileStages).
	volatile map[int]bool

	// prev is the previous build of the project, read on the first miss
	// that needs explaining: a record can be megabytes, and a build that
	// hits everywhere never needs it.
	prevOnce sync.Once
	prev     *cache.BuildRecord

	mu       sync.Mutex
	firstErr error
	record   *cache.BuildRecord
	steps    []orderedStep
	seq      int
	// renewed are the RUN cache mounts (by directory) that this
	// --no-cache build has started afresh.
	renewed map[string]bool
	// closers release what the keys pass prepared.
	closers []func() error
}

type orderedStep struct {
	stage, stepIndex int
	rec              cache.StepRecord
}

func (b *build) addStep(stage, stepIndex int, rec cache.StepRecord) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.steps = append(b.steps, orderedStep{stage, stepIndex, rec})
}

// sortedSteps returns the step records in plan order, and which step each is.
func (b *build) sortedSteps() ([]cache.StepRecord, []stepRef) {
	b.mu.Lock()
	defer b.mu.Unlock()
	order := map[int]int{}
	for i, st := range b.plan.Stages {
		order[st.Index] = i
	}
	steps := append([]orderedStep(nil), b.steps...)
	sortSteps(steps, order)
	out := make([]cache.StepRecord, len(steps))
	refs := make([]stepRef, len(steps))
	for i, s := range steps {
		out[i] = s.rec
		refs[i] = stepRef{s.stage, s.stepIndex}
	}
	return out, refs
}

// discardProgress drops every event.
type discardProgress struct{}

func (discardProgress) Event(Event)            {}
func (discardProgress) Output(Event) io.Writer { return io.Discard }
