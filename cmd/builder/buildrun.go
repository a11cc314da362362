package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"os"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/executor"
	"github.com/builder-dev/builder/exporter"
	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/parser"
	"github.com/builder-dev/builder/planner"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// runBuild is `builder build`: the flags parsed, the inputs and the
// Dockerfile read, then a check, an outline, the targets, or a build.
func runBuild(ctx context.Context, a *app, f *buildFlags, contextArg string) (err error) {
	spec, err := parseBuildSpec(f)
	if err != nil {
		return err
	}
	in, err := resolveInputs(ctx, a, f, contextArg)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := in.sources.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	d, err := loadDockerfile(a, f, in)
	if err != nil {
		return err
	}
	ci := checkInput{df: d.df, lint: d.lint, err: d.parseErr, display: d.path, source: d.data, dfFile: d.file}
	switch {
	case spec.call.check:
		return runCheck(ctx, a, f, spec.call, in.dir, ci)
	case spec.call.outline:
		return runOutline(ctx, a, f, spec.call, in.dir, ci)
	case spec.call.targets:
		return runTargets(a.stdout, spec.call, ci)
	}
	prog, err := newProgress(f.progress, a.stderr)
	if err != nil {
		return err
	}
	defer prog.Close()
	r := &buildRun{a: a, f: f, spec: spec, in: in, d: d, prog: prog, log: &logBuffer{}}
	prog.Record(r.log)
	if d.parseErr != nil {
		// As buildkit: the warnings found before the error, then the error.
		reportLint(prog, d.lint)
		return d.parseErr
	}
	return r.build(ctx)
}

// buildSpec is what the flags ask of a build besides its inputs.
type buildSpec struct {
	outs               []output
	annotations        map[string]string
	cacheFrom, cacheTo []cacheSpec
	call               callFunc
}

// parseBuildSpec checks the flags that need no input: outputs, caches,
// names and --call. As buildx, SOURCE_DATE_EPOCH in the environment is
// also the build arg (unless one is given), so ARG SOURCE_DATE_EPOCH sees
// it either way.
func parseBuildSpec(f *buildFlags) (*buildSpec, error) {
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" && buildArgMap(f.buildArgs)["SOURCE_DATE_EPOCH"] == nil {
		f.buildArgs = append(f.buildArgs, "SOURCE_DATE_EPOCH="+v)
	}
	var spec buildSpec
	var err error
	if spec.outs, err = parseOutputs(f.outputs); err != nil {
		return nil, err
	}
	if spec.annotations, err = parseAnnotations(f.annotations); err != nil {
		return nil, err
	}
	if spec.cacheFrom, err = parseCacheSpecs(f.cacheFrom, cacheImport); err != nil {
		return nil, err
	}
	if spec.cacheTo, err = parseCacheSpecs(f.cacheTo, cacheExport); err != nil {
		return nil, err
	}
	if err := checkNames(f.tags); err != nil {
		return nil, err
	}
	if f.push && len(f.tags) == 0 {
		return nil, fmt.Errorf("--push needs at least one -t name")
	}
	if spec.call, err = parseCall(f.call, f.check); err != nil {
		return nil, err
	}
	return &spec, nil
}

// buildDockerfile is the Dockerfile of a build, read and parsed.
type buildDockerfile struct {
	data []byte
	path string // as messages name it
	file string // the file read ("-" for stdin)
	df   *parser.Dockerfile
	lint *parser.Lint
	// parseErr is the parse error, reported after the lint warnings.
	parseErr error
}

// loadDockerfile reads and parses the build's Dockerfile with its lint
// configuration; a parse error is kept in parseErr for the caller.
func loadDockerfile(a *app, f *buildFlags, in *buildInputs) (*buildDockerfile, error) {
	data, path, file, err := readDockerfile(a, in.file, in.dir)
	if err != nil {
		return nil, err
	}
	if in.display != "" {
		path = in.display
	}
	d := &buildDockerfile{data: data, path: path, file: file}
	d.df, d.lint, d.parseErr = parser.ParseLint(bytes.NewReader(data), path, lintOptions(buildArgMap(f.buildArgs)))
	if d.lint == nil {
		return nil, d.parseErr // reading the check configuration failed
	}
	if d.parseErr == nil {
		if err := d.df.CheckFrontend(buildArgValue(f.buildArgs, "BUILDKIT_SYNTAX")); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// buildRun is one build from its parsed Dockerfile to its outputs.
type buildRun struct {
	a    *app
	f    *buildFlags
	spec *buildSpec
	in   *buildInputs
	d    *buildDockerfile
	prog *progress
	log  *logBuffer

	st        *stores
	contexts  []planner.NamedContext
	platform  v1.Platform   // the first of platforms
	platforms []v1.Platform // the target platforms, each once
	// multi: the build makes an image index (several platforms, or
	// BUILDKIT_MULTI_PLATFORM=1), each platform's plan run concurrently.
	multi     bool
	resolve   func(ctx context.Context, ref string, p v1.Platform) (*planner.ImageInfo, error)
	patterns  []string // the context's .dockerignore
	epochFrom string   // --verify-reproducible: where SOURCE_DATE_EPOCH came from
}

// build plans and runs the build in the store, then exports its image.
func (r *buildRun) build(ctx context.Context) (err error) {
	if err := r.prepare(ctx); err != nil {
		return err
	}
	st, err := r.a.open()
	if err != nil {
		return err
	}
	defer st.Close()
	r.st = st
	gc, err := st.gcPolicy()
	if err != nil {
		return err
	}
	if err := st.lockShared(ctx); err != nil {
		return err
	}
	defer st.collectGarbage(ctx, gc, r.prog.Notice)
	plans := make([]*planner.Plan, len(r.platforms))
	for i, p := range r.platforms {
		if err := loadLayoutContexts(ctx, st, r.contexts, p); err != nil {
			return err
		}
		if plans[i], err = r.plan(ctx, p, i == 0); err != nil {
			return err
		}
	}
	return r.execute(ctx, plans)
}

// prepare fetches the named contexts and reads what planning needs from
// the flags and the context.
func (r *buildRun) prepare(ctx context.Context) (err error) {
	f := r.f
	if r.contexts, err = namedContexts(f.buildContexts); err != nil {
		return err
	}
	if err := r.in.fetchContexts(ctx, r.a, f, r.contexts); err != nil {
		return err
	}
	if r.platforms, err = f.platformList(); err != nil {
		return err
	}
	r.platform = r.platforms[0]
	multi, err := buildArgBool(f.buildArgs, "BUILDKIT_MULTI_PLATFORM")
	if err != nil {
		return err
	}
	r.multi = multi || len(r.platforms) > 1
	if r.multi && f.verifyReproducible {
		return fmt.Errorf("--verify-reproducible checks one platform's image: build each --platform on its own")
	}
	if r.patterns, err = ignorePatterns(r.in.dir, r.d.file); err != nil {
		return err
	}
	if f.verifyReproducible {
		if r.epochFrom, err = ensureEpoch(f, r.d.df, r.in.dir); err != nil {
			return err
		}
	}
	if r.a.isolation.notice != "" {
		r.prog.Notice(r.a.isolation.notice)
	}
	return nil
}

// resolver is the build's base image resolver, one for every platform.
func (r *buildRun) resolver() func(ctx context.Context, ref string, p v1.Platform) (*planner.ImageInfo, error) {
	if r.resolve == nil {
		r.resolve = resolver(r.st, r.f.pull, r.a.remoteOptions(r.platform, r.prog.Notice))
	}
	return r.resolve
}

// plan plans the build for platform p. The first platform's plan
// (first) runs the lint rules and reports their warnings and the unused
// build args: every platform's would say the same.
func (r *buildRun) plan(ctx context.Context, p v1.Platform, first bool) (*planner.Plan, error) {
	f, prog := r.f, r.prog
	var lint *linter.Linter
	if first {
		lint = r.d.lint.Linter()
	}
	plan, err := planner.New(ctx, r.d.df, planner.Options{
		DockerfilePath: r.d.path,
		BuildArgs:      buildArgMap(f.buildArgs),
		Target:         f.target,
		Platform:       p,
		BuildPlatform:  hostPlatform(),
		ResolveImage:   r.resolver(),
		Contexts:       r.contexts,
		ContextEpoch:   r.in.epoch,
		ResolveEpoch: func(ctx context.Context, src planner.EpochSource) (*time.Time, error) {
			return executor.SourceEpoch(ctx, nil, "", src.URL, src.Checksum)
		},
		Lint:           lint,
		IgnorePatterns: r.patterns,
	})
	if !first {
		return plan, err
	}
	// As buildkit: the warnings of the rules run so far, then a planning
	// error; with error=true and warnings, the build fails before any step.
	reportLint(prog, r.d.lint)
	if err != nil {
		return nil, err
	}
	if err := r.d.lint.Err(); err != nil {
		return nil, err
	}
	for _, k := range plan.UnusedBuildArgs {
		if k == "SOURCE_DATE_EPOCH" {
			continue // the exporter's: it clamps the image's timestamps
		}
		prog.Notice(fmt.Sprintf("[warning] build arg %s was not consumed by any stage", k))
	}
	return plan, nil
}

// execute runs the plans (one per platform) in the build's scratch
// directories, records the build and exports its image (or image index).
func (r *buildRun) execute(ctx context.Context, plans []*planner.Plan) (err error) {
	plan := plans[0]
	// The build's scratch directories are held by a lock for as long as
	// it runs, so no other command on this root takes them away.
	active, err := r.st.cache.NewScratch(cache.Active, "build")
	if err != nil {
		return err
	}
	defer closeScratch(active, &err)
	tmp, err := r.st.cache.NewScratch(cache.Temp, "build")
	if err != nil {
		return err
	}
	defer closeScratch(tmp, &err)
	snKind, err := r.a.isolation.snapshotter(r.f.snapshotter)
	if err != nil {
		return err
	}
	sn, err := snapshotter(ctx, r.st.layers, active.Path(), snKind, r.prog.Notice)
	if err != nil {
		return err
	}
	defer sn.Close()
	cgroups, err := r.f.run.cgroups()
	if err != nil {
		return err
	}
	defer cgroups.Close()
	opts, cacheUses, err := r.executorOptions(ctx, plan)
	if err != nil {
		return err
	}
	opts.Snapshotter, opts.TempDir, opts.Cgroups = sn, tmp.Path(), cgroups
	start := time.Now()
	if r.multi {
		return r.executePlatforms(ctx, plans, opts, cacheUses, start)
	}
	res, runErr := runPlan(ctx, opts, plan, r.prog.Notice)
	if ferr := r.st.cache.FlushHashes(context.WithoutCancel(ctx)); ferr != nil && runErr == nil {
		runErr = ferr
	}
	rec := res.Record
	rec.Request = buildRequest(r.f, r.in.dir, r.d.file, r.d.df, r.platforms, plan.SourceDateEpoch, plan)
	for _, u := range cacheUses {
		rec.Caches = append(rec.Caches, u.result())
	}
	defer func() {
		if perr := finishBuild(ctx, r.st, rec, r.log, err); perr != nil && err == nil {
			err = perr
		}
	}()
	if runErr != nil {
		return runErr
	}
	return r.export(ctx, plan, res, start)
}

// sourceRetries is how many times a build whose sources changed while it
// ran (executor.ErrSourceChanged) is run again.
const sourceRetries = 2

// runPlan runs plan with opts, and again when a source changed while it
// ran: the next run keys the changed files afresh and takes what the
// failed one committed from the cache. A source that keeps changing fails
// the build after sourceRetries more runs.
func runPlan(ctx context.Context, opts executor.Options, plan *planner.Plan, notice func(string)) (*executor.Result, error) {
	return retrySourceChanged(ctx, func() (*executor.Result, error) { return executor.New(opts).Run(ctx, plan) }, notice)
}

// retrySourceChanged is runPlan's loop around run. The build's record is
// the last run's, started when the first one did, with the steps an
// earlier run ran (and committed) marked run, not reused: the later run
// found them in the cache only because this build had made them.
func retrySourceChanged(ctx context.Context, run func() (*executor.Result, error), notice func(string)) (*executor.Result, error) {
	res, err := run()
	first := res
	ran := map[cache.Key]cache.StepRecord{}
	for range sourceRetries {
		if !errors.Is(err, executor.ErrSourceChanged) || ctx.Err() != nil {
			break
		}
		if res != nil && res.Record != nil {
			for _, s := range res.Record.Steps {
				if _, seen := ran[s.Key]; !seen && s.Cache == "miss" && s.Layer != "" {
					ran[s.Key] = s
				}
			}
		}
		notice(fmt.Sprintf("%v; building again", err))
		res, err = run()
	}
	if res == first || res == nil || res.Record == nil {
		return res, err
	}
	if first != nil && first.Record != nil {
		res.Record.Started = first.Record.Started
	}
	for i, s := range res.Record.Steps {
		if r, ok := ran[s.Key]; ok && s.Cache == "hit" {
			s.Cache, s.Reason, s.DurationMS, s.SavedMS = r.Cache, r.Reason, r.DurationMS, 0
			res.Record.Steps[i] = s
		}
	}
	return res, err
}

// executorOptions wires the executor to the store and the flags (all but
// the snapshotter, the scratch directory and the cgroups), importing
// --cache-from.
func (r *buildRun) executorOptions(ctx context.Context, plan *planner.Plan) (executor.Options, []*cacheUse, error) {
	f, st := r.f, r.st
	bctx, err := buildcontext.Open(r.in.dir, r.patterns)
	if err != nil {
		return executor.Options{}, nil, err
	}
	o := executor.Options{
		Cache: st.cache, Layers: st.layers, Images: st.images, Context: bctx,
		DockerfilePath: r.d.path, Project: projectID(r.in.id, r.in.dockerfileID(r.d.file), f.target),
		NoCache: f.noCache, NoCacheStages: f.noCacheFilter,
		AllowInsecure: contains(f.allow, "security.insecure"), Labels: keyValues(f.labels),
		Isolation: r.a.isolation.mode, Limits: f.run.limits,
		SourceDateEpoch: plan.SourceDateEpoch, Progress: r.prog,
		Hostname: buildArgValue(f.buildArgs, "BUILDKIT_SANDBOX_HOSTNAME"),
	}
	if len(f.platforms) > 0 {
		o.TargetPlatform = &r.platform
	}
	if o.Secrets, err = readSecrets(f.secrets); err != nil {
		return o, nil, err
	}
	if o.Network, o.AllowNetworkHost, err = runNetwork(f.network, f.allow, r.a.isolation, r.prog.Notice); err != nil {
		return o, nil, err
	}
	if o.ExtraHosts, err = extraHosts(f.addHosts); err != nil {
		return o, nil, err
	}
	if o.SSH, err = sshAgents(f.ssh); err != nil {
		return o, nil, err
	}
	if o.GitAdvice, err = buildArgBool(f.buildArgs, "BUILDKIT_GIT_ADVICE"); err != nil {
		return o, nil, err
	}
	st.images.SetRemoteOptions(r.remoteOptions())
	imported, uses, err := importCachesMetered(ctx, st, r.spec.cacheFrom, r.remoteOptions, r.prog.Notice)
	o.CacheFrom = imported
	return o, uses, err
}

// remoteOptions are the registry options of pulls, pushes and caches.
func (r *buildRun) remoteOptions() exporter.RemoteOptions {
	return r.a.remoteOptions(r.platform, r.prog.Notice)
}

// export writes the outputs and caches of a finished build and reports it.
func (r *buildRun) export(ctx context.Context, plan *planner.Plan, res *executor.Result, start time.Time) (err error) {
	f, prog, rec := r.f, r.prog, res.Record
	outs := r.outputs()
	pushOpts, countPush := meteredPush(r.remoteOptions(), res.Image)
	er := &exportRun{st: r.st, prog: prog, ro: pushOpts, stdout: r.a.stdout, epoch: plan.SourceDateEpoch,
		base: baseConfig(plan.Target), platform: r.platform, windowsLayers: res.WindowsLayers, done: &rec.Outputs, keeps: keptCompressions(outs, r.spec.cacheTo)}
	if res.Image, err = inlineCache(ctx, r.st, res, r.spec.cacheTo); err != nil {
		return err
	}
	res.Image = annotate(res.Image, r.spec.annotations)
	if er.attest, err = prepareAttestations(ctx, r.attestBuild(plan, res)); err != nil {
		return err
	}
	out, err := er.exportAll(ctx, res.Image, f.tags, outs)
	countPush(rec.Outputs)
	if err != nil {
		return dropModifiedLayer(ctx, r.st, rec, r.d.path, err)
	}
	digest := out.local
	rec.ImageDigest, rec.Tags, rec.History = digest.String(), f.tags, res.History
	exported, err := exportCachesMetered(ctx, r.st, res, r.spec.cacheTo, r.remoteOptions, prog.Notice)
	rec.Caches = append(rec.Caches, exported...)
	if err != nil {
		return err
	}
	for _, line := range cacheReport(rec) {
		prog.Notice(line)
	}
	if len(r.spec.cacheFrom) > 0 || len(r.spec.cacheTo) > 0 {
		prog.Notice(cacheTrafficLine(r.st.images.CacheTraffic()))
	}
	prog.Done(fmt.Sprintf("built %s in %.1fs", digest, time.Since(start).Seconds()))
	return r.report(ctx, res, out)
}

// report writes the image ID (-q, --iidfile) and the metadata file, then
// verifies the build with --verify-reproducible.
func (r *buildRun) report(ctx context.Context, res *executor.Result, out exported) error {
	f, rec := r.f, res.Record
	id := out.id()
	if f.progress == "quiet" {
		fmt.Fprintln(r.a.stdout, id)
	}
	if f.iidfile != "" {
		if err := writeFileAtomic(f.iidfile, []byte(id)); err != nil {
			return err
		}
	}
	if f.metadataFile != "" {
		if err := writeMetadata(f.metadataFile, res.Image, out, f.tags, imageNames(f.tags, r.outputs()), rec); err != nil {
			return err
		}
	}
	if f.verifyReproducible {
		return verifyBuild(ctx, r.a, r.st, f, rec, res.Image, r.prog, r.log, r.epochFrom)
	}
	return nil
}
