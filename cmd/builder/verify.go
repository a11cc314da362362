package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/parser"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// A build is reproducible when the same inputs, built again from nothing
// (a fresh store, --no-cache) with the same SOURCE_DATE_EPOCH, give the
// same image digest. `build --verify-reproducible` checks the image it just
// built; `builder verify IMAGE` checks an image of the store, rebuilt from
// the request its build record holds. A difference is named with `builder
// diff` and makes the exit status non-zero.

// errNotReproducible marks a verification that found a difference.
var errNotReproducible = errors.New("not reproducible")

// ensureEpoch gives a build that is to be verified a SOURCE_DATE_EPOCH
// when it has none: from the Dockerfile's ARG SOURCE_DATE_EPOCH default,
// else the commit time of the context's git checkout. It returns where the
// value came from.
func ensureEpoch(f *buildFlags, df *parser.Dockerfile, contextDir string) (string, error) {
	if v := buildArgMap(f.buildArgs)["SOURCE_DATE_EPOCH"]; v != nil && *v != "" {
		if os.Getenv("SOURCE_DATE_EPOCH") == *v {
			return "the environment", nil
		}
		return "--build-arg", nil
	}
	if v, ok := dockerfileEpoch(df); ok {
		f.buildArgs = append(f.buildArgs, "SOURCE_DATE_EPOCH="+v)
		return "the Dockerfile's ARG SOURCE_DATE_EPOCH", nil
	}
	if v, err := gitCommitTime(contextDir); err == nil {
		f.buildArgs = append(f.buildArgs, "SOURCE_DATE_EPOCH="+v)
		return "the commit time of the context's git checkout", nil
	}
	return "", errors.New("--verify-reproducible needs SOURCE_DATE_EPOCH: set it in the environment or with --build-arg, " +
		"give the Dockerfile an ARG SOURCE_DATE_EPOCH=<seconds>, or build a git checkout (its commit time is used)")
}

// dockerfileEpoch returns the default of an ARG SOURCE_DATE_EPOCH of the
// Dockerfile (before the first FROM, else in a stage) that is a number.
func dockerfileEpoch(df *parser.Dockerfile) (string, bool) {
	args := append([]instructions.ArgCommand(nil), df.MetaArgs...)
	for _, st := range df.Stages {
		for _, c := range st.Commands {
			if a, ok := c.(*instructions.ArgCommand); ok {
				args = append(args, *a)
			}
		}
	}
	for _, a := range args {
		for _, kv := range a.Args {
			if kv.Key != "SOURCE_DATE_EPOCH" || kv.Value == nil {
				continue
			}
			if _, err := strconv.ParseInt(*kv.Value, 10, 64); err == nil {
				return *kv.Value, true
			}
		}
	}
	return "", false
}

// gitCommitTime returns the commit time (seconds) of HEAD of the git
// checkout holding dir.
func gitCommitTime(dir string) (string, error) {
	if !inGitRepo(dir) {
		return "", errors.New("not in a git checkout")
	}
	out, err := exec.Command("git", "-C", dir, "log", "-1", "--format=%ct").Output()
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(out))
	if _, err := strconv.ParseInt(v, 10, 64); err != nil {
		return "", fmt.Errorf("git commit time %q", v)
	}
	return v, nil
}

// verifier rebuilds a recorded build in a fresh store and compares.
type verifier struct {
	a        *app
	st       *stores // the store holding the image and its record
	progress string  // --progress of the rebuild
	say      func(string)
	report   io.Writer // where a difference is printed
}

// verify rebuilds rec's request from nothing and compares the image with
// img, the image rec made. It returns an error wrapping
// errNotReproducible when they differ, after printing the difference.
func (v *verifier) verify(ctx context.Context, rec *cache.BuildRecord, img v1.Image) (err error) {
	req := rec.Request
	if req == nil {
		return fmt.Errorf("build %s has no request in its record (an older builder made it): it cannot be built again", rec.ID)
	}
	want, err := img.Digest()
	if err != nil {
		return err
	}
	if req.SourceDateEpoch == nil {
		v.say("[warning] the build had no SOURCE_DATE_EPOCH: its timestamps differ from any rebuild's")
	}
	scratch, err := v.st.cache.NewScratch(cache.Temp, "verify")
	if err != nil {
		return err
	}
	defer closeScratch(scratch, &err)
	fresh := *v.a
	fresh.root, fresh.stdout = filepath.Join(scratch.Path(), "store"), io.Discard
	if err := v.copyBaseImages(ctx, &fresh, req.BaseImages); err != nil {
		return err
	}
	f, err := v.rebuildFlags(&fresh, req, filepath.Join(scratch.Path(), "iid"))
	if err != nil {
		return err
	}
	v.say(fmt.Sprintf("verifying: building %s again in a fresh store with --no-cache", req.ContextDir))
	if err := runBuild(ctx, &fresh, f, req.ContextDir); err != nil {
		return fmt.Errorf("verify: the rebuild failed: %w", err)
	}
	got, err := os.ReadFile(f.iidfile)
	if err != nil {
		return err
	}
	if string(got) == want.String() {
		v.say(fmt.Sprintf("reproducible: the rebuild from nothing gave the same image %s", want))
		return nil
	}
	return v.explain(ctx, &fresh, rec, img, string(got))
}

// copyBaseImages puts the build's base images, from the store, in the
// fresh store under the names the Dockerfile used, so the rebuild reads
// exactly them (and nothing is pulled).
func (v *verifier) copyBaseImages(ctx context.Context, fresh *app, bases []cache.ImageRef) error {
	st, err := fresh.open()
	if err != nil {
		return err
	}
	defer st.Close()
	for _, b := range bases {
		img, err := v.st.images.Image(ctx, b.Digest)
		if err != nil {
			return fmt.Errorf("verify: base image %s@%s: %w", b.Ref, b.Digest, err)
		}
		var tags []string
		if _, err := name.NewTag(b.Ref, name.WeakValidation); err == nil {
			tags = []string{b.Ref}
		}
		if _, err := st.images.Put(ctx, img, tags); err != nil {
			return fmt.Errorf("verify: base image %s: %w", b.Ref, err)
		}
	}
	return nil
}

// rebuildFlags are the flags of the recorded build, with --no-cache and
// no outputs but the image ID. The recorded Dockerfile text is used when
// the file is gone or changed (or was stdin).
func (v *verifier) rebuildFlags(fresh *app, req *cache.BuildRequest, iidfile string) (*buildFlags, error) {
	f := &buildFlags{
		file: req.Dockerfile, buildArgs: req.BuildArgs, labels: req.Labels, target: req.Target,
		secrets: req.Secrets, buildContexts: req.BuildContexts, network: req.Network, allow: req.Allow,
		noCache: true, progress: v.progress, snapshotter: "auto", iidfile: iidfile,
	}
	f.platforms = req.Platforms
	if f.network == "" {
		f.network = "host"
	}
	if req.Dockerfile == "-" || !sameText(req.Dockerfile, req.DockerfileDigest) {
		if req.DockerfileText == "" {
			return nil, fmt.Errorf("verify: the Dockerfile %s changed since the build and its text is not recorded", req.Dockerfile)
		}
		if req.Dockerfile != "-" {
			v.say(fmt.Sprintf("[warning] %s changed since the build: verifying with the Dockerfile as it was", req.Dockerfile))
		}
		f.file, fresh.stdin = "-", strings.NewReader(req.DockerfileText)
	}
	return f, nil
}

// sameText reports whether the Dockerfile at path still has the recorded
// digest (of its lines as the parser reads them).
func sameText(path, digest string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	df, err := parser.Parse(strings.NewReader(string(data)), path)
	if err != nil {
		return false
	}
	sum := sha256.Sum256([]byte(strings.Join(df.Lines, "\n") + "\n"))
	return "sha256:"+hex.EncodeToString(sum[:]) == digest
}

// explain prints what differs between the image and its rebuild, and
// returns the verification's error.
func (v *verifier) explain(ctx context.Context, fresh *app, rec *cache.BuildRecord, img v1.Image, got string) error {
	st, err := fresh.open()
	if err != nil {
		return err
	}
	defer st.Close()
	rebuilt, err := st.images.Image(ctx, got)
	if err != nil {
		return err
	}
	a := &diffSide{Ref: "build", Kind: "build", BuildID: rec.ID, rec: rec, img: img, label: "the build " + rec.ID}
	a.Digest, _ = digestOf(img)
	b := &diffSide{Ref: "rebuild", Kind: "build", Digest: got, img: rebuilt, label: "the rebuild from nothing"}
	if rb, err := st.cache.BuildForImage(ctx, got); err == nil {
		b.rec, b.BuildID = rb, rb.ID
	}
	rep, err := diffSides(ctx, a, b)
	if err != nil {
		return err
	}
	fmt.Fprintln(v.report, "\nThe rebuild differs from the build:")
	printDiff(v.report, rep, 50)
	return fmt.Errorf("%w: the build gave %s, the rebuild from nothing %s%s", errNotReproducible, a.Digest, got, diffSummary(rep))
}

func digestOf(img v1.Image) (string, error) {
	d, err := img.Digest()
	return d.String(), err
}

// diffSummary names the first files and config fields that differ.
func diffSummary(r *diffReport) string {
	if r.Image == nil {
		return ""
	}
	var names []string
	for _, l := range r.Image.Layers {
		for _, f := range l.Files {
			names = append(names, f.Path)
		}
	}
	files := len(names)
	for _, f := range r.Image.Config {
		names = append(names, "config "+f.Field)
	}
	if len(names) == 0 {
		return ""
	}
	more := ""
	if len(names) > 5 {
		more = fmt.Sprintf(" and %d more", len(names)-5)
		names = names[:5]
	}
	return fmt.Sprintf(" (%s, %d config fields differ: %s%s)", plural(files, "file"), len(r.Image.Config), strings.Join(names, ", "), more)
}

// verifyBuild is `build --verify-reproducible` after the build: the
// build's own progress is closed first, so the rebuild's follows it.
func verifyBuild(ctx context.Context, a *app, st *stores, f *buildFlags, rec *cache.BuildRecord, img v1.Image, prog *progress, log io.Writer, epochFrom string) error {
	if err := prog.Close(); err != nil {
		return err
	}
	say := func(msg string) {
		fmt.Fprintln(log, "=> "+msg)
		if f.progress != "quiet" {
			fmt.Fprintln(a.stderr, "=> "+msg)
		}
	}
	if rec.Request != nil && rec.Request.SourceDateEpoch != nil {
		say(fmt.Sprintf("SOURCE_DATE_EPOCH=%d (from %s)", *rec.Request.SourceDateEpoch, epochFrom))
	}
	v := &verifier{a: a, st: st, progress: f.progress, say: say, report: io.MultiWriter(a.stderr, log)}
	return v.verify(ctx, rec, img)
}

func cmdVerify(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "verify", "[OPTIONS] IMAGE")
	progress := fs.String("progress", "auto", "progress of the rebuild: auto, plain, tty, quiet or rawjson")
	st, err := a.setup(fs, args, 1, 1)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.lockShared(ctx); err != nil {
		return err
	}
	img, err := st.images.Image(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	rec, err := st.cache.BuildForImage(ctx, d.String())
	if errors.Is(err, cache.ErrNotFound) {
		return fmt.Errorf("no build record in %s made %s: verify rebuilds what the record of its build says", st.cache.Root(), fs.Arg(0))
	}
	if err != nil {
		return err
	}
	v := &verifier{a: a, st: st, progress: *progress, report: a.stdout,
		say: func(msg string) { fmt.Fprintln(a.stderr, "=> "+msg) }}
	err = v.verify(ctx, rec, img)
	if errors.Is(err, errNotReproducible) {
		fmt.Fprintf(a.stderr, "ERROR: %v\n", err)
		return exitError{1}
	}
	return err
}
