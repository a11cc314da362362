package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/executor"
	"github.com/builder-dev/builder/exporter"
	"github.com/builder-dev/builder/internal/attest"
	"github.com/builder-dev/builder/planner"
)

// A multi-platform build (--platform a,b or BUILDKIT_MULTI_PLATFORM=1)
// runs one plan per platform, concurrently, as independent DAGs that share
// what is identical: the executors share Flights, so a step with the same
// key in several plans (a FROM --platform=$BUILDPLATFORM stage's steps
// that do not depend on the target) runs once, and its record serves
// every platform. Each platform has its own build record; the outputs get
// an image index over the platforms' images.

// platformBuild is one platform's part of a multi-platform build.
type platformBuild struct {
	platform v1.Platform
	plan     *planner.Plan
	res      *executor.Result
}

// executePlatforms runs every platform's plan with opts (the build's
// executor options), records each platform's build and exports the index.
func (r *buildRun) executePlatforms(ctx context.Context, plans []*planner.Plan, opts executor.Options, uses []*cacheUse, start time.Time) (err error) {
	builds := make([]*platformBuild, len(plans))
	flights := executor.NewFlights()
	g, gctx := errgroup.WithContext(ctx)
	for i, plan := range plans {
		pb := &platformBuild{platform: r.platforms[i], plan: plan}
		builds[i] = pb
		o := opts
		name := planner.FormatPlatform(pb.platform)
		o.Flights, o.Name, o.MultiPlatform = flights, name, true
		o.Project = opts.Project + " " + name
		if len(r.f.platforms) > 0 {
			o.TargetPlatform = &pb.platform
		}
		g.Go(func() error {
			res, err := runPlan(gctx, o, plan, r.prog.Notice)
			pb.res = res
			return err
		})
	}
	runErr := g.Wait()
	if ferr := r.st.cache.FlushHashes(context.WithoutCancel(ctx)); ferr != nil && runErr == nil {
		runErr = ferr
	}
	for i, pb := range builds {
		if pb.res == nil {
			pb.res = &executor.Result{Record: &cache.BuildRecord{ID: fmt.Sprintf("%d", time.Now().UnixNano()), Started: start}}
		}
		rec := pb.res.Record
		rec.Platform = planner.FormatPlatform(pb.platform)
		rec.Request = buildRequest(r.f, r.in.dir, r.d.file, r.d.df, r.platforms, pb.plan.SourceDateEpoch, pb.plan)
		if i == 0 {
			for _, u := range uses {
				rec.Caches = append(rec.Caches, u.result())
			}
		}
	}
	defer func() {
		for _, pb := range builds {
			if perr := finishBuild(ctx, r.st, pb.res.Record, r.log, err); perr != nil && err == nil {
				err = perr
			}
		}
	}()
	if runErr != nil {
		return runErr
	}
	return r.exportPlatforms(ctx, builds, start)
}

// exportPlatforms writes the outputs of a multi-platform build: every
// platform's image (with inline cache and annotations) in one image index.
func (r *buildRun) exportPlatforms(ctx context.Context, builds []*platformBuild, start time.Time) error {
	f, prog := r.f, r.prog
	imgs := make([]v1.Image, len(builds))
	atts := platformAttests{}
	for i, pb := range builds {
		img, err := inlineCache(ctx, r.st, pb.res, r.spec.cacheTo)
		if err != nil {
			return err
		}
		imgs[i] = annotate(img, r.spec.annotations)
		pb.res.Image = imgs[i]
		b := r.attestBuild(pb.plan, pb.res)
		b.platform = pb.platform
		if atts[planner.FormatPlatform(pb.platform)], err = prepareAttestations(ctx, b); err != nil {
			return err
		}
	}
	first := builds[0].res.Record
	pushOpts, countPush := meteredPush(r.remoteOptions(), imgs[hostImage(builds)])
	outs := r.outputs()
	er := &exportRun{st: r.st, prog: prog, ro: pushOpts, stdout: r.a.stdout, epoch: builds[0].plan.SourceDateEpoch,
		done: &first.Outputs, keeps: keptCompressions(outs, r.spec.cacheTo)}
	out, err := er.exportIndex(ctx, builds, imgs, atts, f.tags, outs)
	countPush(first.Outputs)
	if err != nil {
		return dropModifiedLayer(ctx, r.st, first, r.d.path, err)
	}
	for i, pb := range builds {
		rec := pb.res.Record
		d, err := imgs[i].Digest()
		if err != nil {
			return err
		}
		rec.ImageDigest, rec.Index, rec.Tags, rec.History = d.String(), out.local.String(), f.tags, pb.res.History
		cfg, err := imgs[i].ConfigName()
		if err != nil {
			return err
		}
		out.platforms = append(out.platforms, platformDigests{Platform: planner.FormatPlatform(pb.platform), Digest: d.String(), Config: cfg.String()})
	}
	merged := mergedResult(builds, imgs[hostImage(builds)])
	exported, err := exportCachesMetered(ctx, r.st, merged, r.spec.cacheTo, r.remoteOptions, prog.Notice)
	first.Caches = append(first.Caches, exported...)
	if err != nil {
		return err
	}
	for _, pb := range builds {
		for _, line := range cacheReport(pb.res.Record) {
			prog.Notice(pb.res.Record.Platform + ": " + line)
		}
	}
	if len(r.spec.cacheFrom) > 0 || len(r.spec.cacheTo) > 0 {
		prog.Notice(cacheTrafficLine(r.st.images.CacheTraffic()))
	}
	prog.Done(fmt.Sprintf("built %s (%d platforms) in %.1fs", out.local, len(builds), time.Since(start).Seconds()))
	merged.Record.ImageDigest = out.local.String()
	return r.report(ctx, merged, out)
}

// outputs are the build's outputs: -o values, then --push and --load.
func (r *buildRun) outputs() []output {
	outs := r.spec.outs
	if r.f.push {
		for _, t := range r.f.tags {
			outs = append(outs, output{typ: "registry", name: t, push: true})
		}
	}
	if r.f.load {
		outs = append(outs, output{typ: "docker"})
	}
	return outs
}

// hostImage is the index of the platform an output that holds one image
// per name takes: the host's, else the first.
func hostImage(builds []*platformBuild) int {
	for i, pb := range builds {
		if pb.platform.OS == "linux" && pb.platform.Architecture == runtime.GOARCH {
			return i
		}
	}
	return 0
}

// mergedResult is one Result over every platform: the steps of all (each
// key once), for the remote cache, and img for what needs one image.
func mergedResult(builds []*platformBuild, img v1.Image) *executor.Result {
	rec := *builds[0].res.Record
	rec.Steps = nil
	seen := map[cache.Key]bool{}
	for _, pb := range builds {
		for _, s := range pb.res.Record.Steps {
			if !s.Key.IsZero() && seen[s.Key] {
				continue
			}
			seen[s.Key] = true
			rec.Steps = append(rec.Steps, s)
		}
	}
	return &executor.Result{Image: img, Record: &rec}
}

// platformAttests are a multi-platform build's attestations, by platform.
type platformAttests map[string]*attestRun

// forImage is the statements maker of the index's images exported under
// names: each platform's image gets its own platform's statements.
func (m platformAttests) forImage(names []string, push bool) exporter.Attest {
	some := false
	for _, r := range m {
		some = some || len(r.pick(push)) > 0
	}
	if !some {
		return nil
	}
	return func(img v1.Image, subject v1.Descriptor) ([]exporter.Statement, error) {
		if subject.Platform == nil {
			return nil, nil
		}
		a := m[planner.FormatPlatform(*subject.Platform)].forImage(names, push)
		if a == nil {
			return nil, nil
		}
		return a(img, subject)
	}
}

// exportIndex writes the outputs of a multi-platform build and stores its
// index under its tags (and type=image names) once they are written.
func (r *exportRun) exportIndex(ctx context.Context, builds []*platformBuild, imgs []v1.Image, atts platformAttests, tags []string, outs []output) (exported, error) {
	var ex exported
	tags = append([]string(nil), tags...)
	for _, o := range outs {
		if o.typ == "image" {
			tags = append(tags, o.name)
		}
		rec, err := r.exportPlatformOutput(ctx, builds, imgs, atts, tags, o, &ex)
		if err != nil {
			return ex, fmt.Errorf("export %s: %w", o.typ, err)
		}
		if o.typ != "image" || o.push {
			*r.done = append(*r.done, rec)
		}
	}
	digest, err := r.st.images.PutIndex(ctx, imgs, atts.forImage(tags, false), tags)
	if err != nil {
		return ex, fmt.Errorf("store image index: %w", err)
	}
	*r.done = append(*r.done, cache.BuildOutput{Type: "image", Name: strings.Join(tags, ","), Digest: digest.String()})
	for _, t := range tags {
		r.prog.Notice("naming to " + t)
	}
	ex.local = digest
	if d, err := r.st.images.Descriptor(ctx, digest.String()); err == nil {
		ex.localDesc = d
	}
	return ex, nil
}

// exportPlatformOutput writes one output of a multi-platform build.
func (r *exportRun) exportPlatformOutput(ctx context.Context, builds []*platformBuild, imgs []v1.Image, atts platformAttests, tags []string, o output, ex *exported) (cache.BuildOutput, error) {
	rec := cache.BuildOutput{Type: o.typ, Dest: o.dest, Name: o.name}
	tmp, err := r.st.cache.ScratchDir()
	if err != nil {
		return rec, err
	}
	out := make([]v1.Image, len(imgs))
	var created time.Time // the same epoch for every platform
	for i, img := range imgs {
		e := o.exportEpoch(r.epoch, baseConfig(builds[i].plan.Target), tmp, r.prog.Notice)
		if out[i], err = e.Apply(img); err != nil {
			return rec, err
		}
		if o.typ == "local" || o.typ == "tar" {
			out[i] = filesImage(out[i], builds[i].res.WindowsLayers)
		}
		created = e.Created()
	}
	host := out[hostImage(builds)]
	if o.dest != "" && o.dest != "-" {
		r.prog.Notice(fmt.Sprintf("exporting %d platforms to %s %s", len(out), o.typ, o.dest))
	}
	switch o.typ {
	case "docker":
		if o.dest == "" {
			return rec, errors.New("docker exporter does not currently support exporting manifest lists: the Docker engine's image store holds one platform per name; use -o type=oci, -o type=docker,dest=FILE (Docker 25+ loads its index), --push, or one --platform")
		}
		tagged := []exporter.Tagged{{Image: host, Platforms: out, Tags: o.archiveNames(tags), Created: created}}
		err = r.writeArchive(ctx, o, func(path string) error { return exporter.WriteDocker(ctx, path, tagged) }, nil)
	case "oci":
		names := o.archiveNames(tags)
		tagged := []exporter.Tagged{{Image: host, Platforms: out, Tags: names, Attest: atts.forOutput(o, names), Created: created}}
		err = r.writeOCI(ctx, o, tagged, ex)
	case "local":
		if o.platformSplit(true) {
			err = r.writeLocalSplit(ctx, o.dest, builds, out, atts)
		} else {
			err = r.writeLocalMerged(ctx, o.dest, builds, out, atts)
		}
	case "tar":
		err = r.writeStream(o.dest, func(w io.Writer) error { return r.writePlatformsTar(w, builds, out, atts, o.platformSplit(true)) })
	case "image", "registry":
		if !o.push {
			return rec, nil
		}
		r.prog.Notice("pushing " + o.name)
		po := r.ro
		po.Compression = o.comp
		var d v1.Descriptor
		if d, err = r.st.images.PushIndex(ctx, out, atts.forImage([]string{o.name}, true), o.name, po); err == nil {
			r.prog.Notice(fmt.Sprintf("pushed %s@%s", o.name, d.Digest))
			rec.Type, rec.Digest, ex.pushed = "registry", d.Digest.String(), d
		}
	}
	return rec, err
}

// forOutput is the statements maker of an archive output of the index:
// OCI archives hold them.
func (m platformAttests) forOutput(o output, tags []string) exporter.Attest {
	if o.typ != "oci" {
		return nil
	}
	return m.forImage(tags, false)
}

// platformDir names a platform's directory in local and tar outputs as
// BuildKit does: "linux_amd64", "linux_arm_v7".
func platformDir(p v1.Platform) string {
	return strings.ReplaceAll(planner.FormatPlatform(p), "/", "_")
}

// writeLocalSplit writes each platform's root filesystem and statements
// (provenance.json, ...) into its directory under dest.
func (r *exportRun) writeLocalSplit(ctx context.Context, dest string, builds []*platformBuild, imgs []v1.Image, atts platformAttests) error {
	for i, img := range imgs {
		p := builds[i].platform
		if err := exporter.WriteLocalOutput(ctx, dest, platformDir(p), img); err != nil {
			return err
		}
		if err := atts[planner.FormatPlatform(p)].writeFiles(filepath.Join(dest, platformDir(p)), r.epoch); err != nil {
			return err
		}
	}
	return nil
}

// writeLocalMerged writes every platform's root filesystem into dest
// (platform-split=false), refusing, before writing anything, a file two
// platforms have (BuildKit's error), and each platform's statements as
// provenance.PLATFORM.json.
func (r *exportRun) writeLocalMerged(ctx context.Context, dest string, builds []*platformBuild, imgs []v1.Image, atts platformAttests) error {
	owner := map[string]string{}
	subjects := make([][]attest.Subject, len(imgs))
	for i, img := range imgs {
		name := planner.FormatPlatform(builds[i].platform)
		paths, subj, err := rootfsFiles(img, len(atts[name].pick(false)) > 0)
		if err != nil {
			return err
		}
		for _, p := range paths {
			if prev, ok := owner[p]; ok {
				return fmt.Errorf("cannot overwrite %s from %s with %s when split option is disabled", p, prev, name)
			}
			owner[p] = name
		}
		subjects[i] = subj
	}
	for _, img := range imgs {
		if err := exporter.WriteLocalOutput(ctx, dest, "", img); err != nil {
			return err
		}
	}
	for i, pb := range builds {
		if err := atts[planner.FormatPlatform(pb.platform)].writeStatementFiles(dest, platformDir(pb.platform), subjects[i], r.epoch); err != nil {
			return err
		}
	}
	return nil
}

// rootfsFiles lists the paths of img's root filesystem that are not
// directories and, with hash, its regular files as statement subjects.
func rootfsFiles(img v1.Image, hash bool) ([]string, []attest.Subject, error) {
	rc := exporter.Flatten(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var paths []string
	var subjects []attest.Subject
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return paths, subjects, rc.Close()
		}
		if err != nil {
			return nil, nil, err
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		name := strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
		paths = append(paths, name)
		if !hash || h.Typeflag != tar.TypeReg {
			continue
		}
		sum := sha256.New()
		if _, err := io.Copy(sum, tr); err != nil {
			return nil, nil, err
		}
		subjects = append(subjects, attest.Subject{Name: name, Digest: map[string]string{"sha256": hex.EncodeToString(sum.Sum(nil))}})
	}
}

// writePlatformsTar writes each platform's root filesystem into one tar,
// under the platform's directory, the directories in name order, and its
// statements in the directory too (named for the platform with
// platform-split=false), as BuildKit's tar exporter does.
func (r *exportRun) writePlatformsTar(w io.Writer, builds []*platformBuild, imgs []v1.Image, atts platformAttests, split bool) error {
	order := make([]int, len(imgs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return platformDir(builds[order[a]].platform) < platformDir(builds[order[b]].platform)
	})
	tw := tar.NewWriter(w)
	var mtime time.Time
	if r.epoch != nil {
		mtime = *r.epoch
	}
	for _, i := range order {
		p := builds[i].platform
		dir, a := platformDir(p), atts[planner.FormatPlatform(p)]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: mtime}); err != nil {
			return err
		}
		subjects, err := copyRootfs(tw, imgs[i], dir, len(a.pick(false)) > 0)
		if err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		suffix := ""
		if !split {
			suffix = dir
		}
		if err := a.writeStatementEntries(tw, dir, suffix, subjects, r.epoch); err != nil {
			return err
		}
	}
	return tw.Close()
}
