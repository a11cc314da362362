package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	cplatforms "github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/exporter"
	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/internal/outfile"
	"github.com/builder-dev/builder/planner"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// buildFlags are the options of `builder build`, named as in docker build.
type buildFlags struct {
	tags          []string
	file          string
	buildArgs     []string
	labels        []string
	target        string
	outputs       []string
	iidfile       string
	metadataFile  string
	progress      string
	noCache       bool
	noCacheFilter []string
	network       string
	addHosts      []string
	platforms     []string
	allow         []string
	secrets       []string
	ssh           []string
	buildContexts []string
	check         bool
	call          string
	snapshotter   string
	pull          bool
	push          bool
	load          bool
	annotations   []string
	quiet         bool
	cacheFrom     []string
	cacheTo       []string
	// verifyReproducible rebuilds in a fresh store and compares.
	verifyReproducible bool
	run                runFlags    // --isolation, RUN resource limits (runflags.go)
	attest             attestFlags // --attest, --provenance, --sbom (attest.go)
}

func cmdBuild(ctx context.Context, a *app, args []string) error {
	if os.Getenv("GOGC") == "" {
		// A build is one short process whose live heap is small (about
		// 20 MB for a 20,000-file context) but which allocates it several
		// times over: at the default 100 it spends ~8 collections on a
		// 150 ms no-op rebuild. 400 trades a few tens of MB for most of
		// that; GOGC in the environment still wins.
		debug.SetGCPercent(400)
	}
	var f buildFlags
	fs := newFlags(a, "build", "[OPTIONS] CONTEXT")
	fs.StringArrayVarP(&f.tags, "tag", "t", nil, "name and optionally a tag (name:tag)")
	fs.StringVarP(&f.file, "file", "f", "", "Dockerfile path (default CONTEXT/Dockerfile; - reads stdin)")
	fs.StringArrayVar(&f.buildArgs, "build-arg", nil, "build-time variable K=V (or K to take it from the environment)")
	fs.StringArrayVar(&f.labels, "label", nil, "label K=V for the image")
	fs.StringVar(&f.target, "target", "", "build stage to build")
	fs.StringArrayVarP(&f.outputs, "output", "o", nil, "output: type=docker,dest=FILE | type=oci,dest=FILE | type=local,dest=DIR | type=tar,dest=FILE | type=registry,name=REF | type=image,name=REF[,push=true]; oci, registry and image take compression=gzip|zstd|uncompressed, compression-level=N, force-compression=true")
	fs.StringVar(&f.iidfile, "iidfile", "", "write the image ID to FILE")
	fs.StringVar(&f.metadataFile, "metadata-file", "", "write build metadata (digests, per-step cache results) as JSON to FILE")
	fs.StringVar(&f.progress, "progress", "auto", "progress output: auto, plain, tty, quiet or rawjson")
	fs.BoolVar(&f.noCache, "no-cache", false, "do not use the cache")
	fs.StringSliceVar(&f.noCacheFilter, "no-cache-filter", nil, "do not use the cache for these stages")
	fs.StringVar(&f.network, "network", "default", "network of RUN steps: default (private, outbound only), host or none")
	fs.StringArrayVar(&f.addHosts, "add-host", nil, "add HOST:IP to the /etc/hosts of RUN steps (repeatable)")
	fs.StringSliceVar(&f.platforms, "platform", nil, "target platforms (os/arch[/variant], comma-separated or repeated: one image each, in an image index); a RUN for another architecture runs under a binfmt_misc emulator")
	fs.StringArrayVar(&f.allow, "allow", nil, "extra privileges: network.host, security.insecure")
	fs.StringArrayVar(&f.secrets, "secret", nil, "secret for RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR")
	fs.StringArrayVar(&f.ssh, "ssh", nil, "SSH agent for RUN --mount=type=ssh: default|ID[=SOCKET|KEY[,KEY]]")
	fs.StringArrayVar(&f.buildContexts, "build-context", nil, "named build context NAME=DIR|docker-image://REF|oci-layout://DIR[@DIGEST|:TAG]|GIT-URL|https://URL")
	fs.BoolVar(&f.check, "check", false, "check the Dockerfile with the lint rules instead of building (--call check)")
	fs.StringVar(&f.call, "call", "build", "what to do: build, check[,format=json][,ignorestatus=true] (lint), outline[,format=json] (the args, secrets and ssh the build needs) or targets[,format=json] (the stages), as buildx")
	fs.StringVar(&f.snapshotter, "snapshotter", "auto", "snapshotter: auto, overlay or copy")
	fs.BoolVar(&f.pull, "pull", false, "always pull base images from their registry (default: only those missing locally)")
	fs.BoolVar(&f.push, "push", false, "push the image to the registry of every -t name after the build")
	fs.StringArrayVar(&f.annotations, "annotation", nil, "annotate the image manifest: KEY=VALUE or manifest:KEY=VALUE (repeatable)")
	fs.BoolVar(&f.load, "load", false, "load the image into the Docker engine of $DOCKER_HOST (same as -o type=docker)")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "print only the image ID")
	fs.StringArrayVar(&f.cacheFrom, "cache-from", nil, "import a build cache: type=registry,ref=REF | REF | type=local,src=DIR")
	fs.StringArrayVar(&f.cacheTo, "cache-to", nil, "export the build cache: type=registry,ref=REF[,mode=min|max] | type=local,dest=DIR[,mode=min|max]; compression=gzip|zstd|uncompressed, compression-level=N, force-compression=true")
	fs.BoolVar(&f.verifyReproducible, "verify-reproducible", false, "build again from nothing (fresh store, --no-cache, same SOURCE_DATE_EPOCH) and fail naming what differs unless the digests match")
	legacyFlags(fs)
	addRunFlags(fs, &f.run)
	addAttestFlags(fs, &f.attest)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := f.run.check(); err != nil {
		return err
	}
	if err := f.attest.check(f.buildArgs); err != nil {
		return err
	}
	if err := needArgs(fs, 1, 1); err != nil {
		return err
	}
	if f.quiet {
		f.progress = "quiet"
	}
	return runBuild(ctx, a, &f, fs.Arg(0))
}

// dropModifiedLayer names, in an export error that found a committed
// layer changed on disk, this build's steps that made the layer; the image
// store drops their records and the layer (exporter.DropModifiedLayer), so
// the next build rebuilds them. Other errors are returned as they are.
func dropModifiedLayer(ctx context.Context, st *stores, rec *cache.BuildRecord, dockerfile string, err error) error {
	if rec == nil {
		return err
	}
	dropped, err := st.images.DropModifiedLayer(ctx, rec.Steps, err)
	if len(dropped) == 0 {
		return err
	}
	steps := make([]string, len(dropped))
	for i, s := range dropped {
		steps[i] = fmt.Sprintf("%s:%d %s", dockerfile, s.Line, s.Instruction)
	}
	return fmt.Errorf("%w (the layer of %s)", err, strings.Join(steps, ", "))
}

// readDockerfile reads the Dockerfile: -f PATH, -f - (stdin), or
// CONTEXT/Dockerfile. It returns its content, the name to show in messages
// and the file read ("-" for stdin). As BuildKit, a Dockerfile larger than
// buildcontext.MaxFileSize is refused, named by its base name.
func readDockerfile(a *app, file, contextDir string) (data []byte, display, path string, err error) {
	switch file {
	case "-":
		display, path = "Dockerfile", "-"
		data, err = buildcontext.ReadLimited(a.stdin, display)
	case "":
		display, path = "Dockerfile", filepath.Join(contextDir, "Dockerfile")
		data, err = readFileLimited(path)
		if errors.Is(err, os.ErrNotExist) {
			// As BuildKit: a lowercase dockerfile when there is no Dockerfile.
			lower := filepath.Join(contextDir, "dockerfile")
			if d, lerr := readFileLimited(lower); lerr == nil {
				display, path, data, err = "dockerfile", lower, d, nil
			}
		}
	default:
		display, path = file, file
		data, err = readFileLimited(path)
	}
	if err != nil {
		return nil, "", "", fmt.Errorf("failed to read dockerfile: %w", err)
	}
	return data, display, path, nil
}

// readFileLimited reads the file at path with buildcontext.ReadLimited.
func readFileLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return buildcontext.ReadLimited(f, filepath.Base(path))
}

// checkContextDir names a missing or unusable context directory as such
// (buildx's words), before anything is read from it.
func checkContextDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("unable to prepare context: path %q not found", dir)
	case err != nil:
		return fmt.Errorf("unable to prepare context: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("unable to prepare context: path %q is not a directory", dir)
	}
	return nil
}

// ignorePatterns checks that the build context is a directory and reads
// its .dockerignore patterns (or those of the Dockerfile's own
// <Dockerfile>.dockerignore), as buildkit does.
func ignorePatterns(dir, dockerfile string) ([]string, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("build context %s is not a directory", dir)
	}
	if dockerfile == "-" {
		dockerfile = filepath.Join(dir, "Dockerfile")
	}
	return buildcontext.ReadIgnore(dir, dockerfile)
}

// namedContexts parses --build-context values; directories (and OCI
// layout directories) are made absolute (relative to the working
// directory, as buildx) and must exist. URLs are fetched by
// buildInputs.fetchContexts.
func namedContexts(vals []string) ([]planner.NamedContext, error) {
	var out []planner.NamedContext
	for _, v := range vals {
		nc, err := planner.ParseContext(v)
		if err != nil {
			return nil, err
		}
		if nc.Layout != "" {
			if nc.Layout, err = filepath.Abs(nc.Layout); err != nil {
				return nil, fmt.Errorf("build context %s: %w", nc.Name, err)
			}
		}
		if nc.Dir != "" {
			if nc.Dir, err = filepath.Abs(nc.Dir); err != nil {
				return nil, fmt.Errorf("build context %s: %w", nc.Name, err)
			}
			if fi, err := os.Stat(nc.Dir); err != nil {
				return nil, fmt.Errorf("build context %s: %w", nc.Name, err)
			} else if !fi.IsDir() {
				return nil, fmt.Errorf("build context %s: %s is not a directory", nc.Name, nc.Dir)
			}
		}
		out = append(out, nc)
	}
	return out, nil
}

// resolver looks base images up in the local store and pulls those it
// lacks, or every one with pull (--pull), for the platform asked. An image
// copied from the Docker engine is copied once per build, however many
// platforms' plans name it.
func resolver(st *stores, pull bool, ro exporter.RemoteOptions) func(ctx context.Context, ref string, p v1.Platform) (*planner.ImageInfo, error) {
	engine := localEngine(ro.Progress)
	var mu sync.Mutex
	copied := map[string]v1.Image{}
	fromEngineOnce := func(ctx context.Context, ref string) (v1.Image, error) {
		mu.Lock()
		defer mu.Unlock()
		if img, ok := copied[ref]; ok {
			return img, nil
		}
		img, err := fromEngine(ctx, st, engine(ctx), ref, ro.Progress)
		if err == nil {
			copied[ref] = img
		}
		return img, err
	}
	return func(ctx context.Context, ref string, p v1.Platform) (*planner.ImageInfo, error) {
		img, err := st.images.ImageFor(ctx, ref, p)
		// Look elsewhere for what the store lacks, not for an image it has
		// damaged: the tag pinned a digest, and the error says how to get
		// it back. The order is the local store, then the Docker engine,
		// then the registry; --pull skips only the local store.
		var damaged *exporter.DamagedError
		if pull || (errors.Is(err, cache.ErrNotFound) && !errors.As(err, &damaged)) {
			img, err = fromEngineOnce(ctx, ref)
			if errors.Is(err, cache.ErrNotFound) {
				img, err = pullImage(ctx, st, ref, p, ro, !pull)
			}
		}
		if err == nil && !pull {
			img, err = forPlatform(ctx, st, img, ref, p, ro)
		}
		if err != nil {
			return nil, err
		}
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("base image %s config: %w", ref, err)
		}
		return &planner.ImageInfo{Ref: ref, Digest: d.String(), Config: cfg, Index: st.images.IndexOf(ctx, ref, d.String())}, nil
	}
}

// forPlatform returns img, an image of the local store or the Docker
// engine, if it is for platform p (or a platform p's programs accept, as
// containerd matches them: arm/v7 takes arm/v6), else the image of p
// pulled from the registry. It never uses an image of another
// architecture: the error names both platforms.
func forPlatform(ctx context.Context, st *stores, img v1.Image, ref string, p v1.Platform, ro exporter.RemoteOptions) (v1.Image, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("base image %s config: %w", ref, err)
	}
	have := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	if have.Architecture == "" || platformMatches(p, have) {
		return img, nil
	}
	pulled, err := pullImage(ctx, st, ref, p, ro, false)
	if err != nil {
		return nil, fmt.Errorf("base image %s: the local one is for %s, not %s, and %w", ref, planner.FormatPlatform(have), planner.FormatPlatform(p), err)
	}
	return pulled, nil
}

// platformMatches reports whether an image for have runs as target want.
func platformMatches(want, have v1.Platform) bool {
	m := cplatforms.Only(ociPlatform(want))
	return m.Match(ociPlatform(have))
}

func ociPlatform(p v1.Platform) ocispec.Platform {
	return ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
}

// localEngine returns a function giving the Docker engine of $DOCKER_HOST
// (or the default socket) if one answers, else nil; it asks once, when
// first called, and says so when $DOCKER_HOST names an engine that does
// not answer.
func localEngine(notice func(string)) func(context.Context) *exporter.Engine {
	var once sync.Once
	var eng *exporter.Engine
	return func(ctx context.Context) *exporter.Engine {
		once.Do(func() {
			e, err := exporter.NewEngine("")
			if err == nil {
				err = e.Ping(ctx)
			}
			if err == nil {
				eng = e
			} else if os.Getenv("DOCKER_HOST") != "" && notice != nil {
				notice(fmt.Sprintf("[warning] docker engine $DOCKER_HOST does not answer, not looking for images there: %v", err))
			}
		})
		return eng
	}
}

// fromEngine copies ref from the Docker engine into the store; an error
// wrapping cache.ErrNotFound when there is no engine or it lacks ref.
func fromEngine(ctx context.Context, st *stores, eng *exporter.Engine, ref string, notice func(string)) (v1.Image, error) {
	if eng == nil {
		return nil, cache.ErrNotFound
	}
	if _, err := eng.ImageID(ctx, ref); err != nil {
		if !errors.Is(err, cache.ErrNotFound) && notice != nil {
			notice(fmt.Sprintf("[warning] %v; trying the registry", err))
		}
		return nil, cache.ErrNotFound
	}
	if notice != nil {
		notice(fmt.Sprintf("copying %s from the docker engine at %s", ref, eng.Host()))
	}
	d, err := st.images.FromEngine(ctx, eng, ref)
	if err != nil {
		return nil, err
	}
	return st.images.Image(ctx, d.String())
}

// pullImage pulls ref for platform p and returns the stored image.
// missing says the local store lacked it, for the error message.
func pullImage(ctx context.Context, st *stores, ref string, p v1.Platform, ro exporter.RemoteOptions, missing bool) (v1.Image, error) {
	ro.Platform = p
	ro.Lazy = true // layers come when a step needs them
	if ro.Progress != nil {
		ro.Progress("pulling " + ref)
	}
	digest, err := st.images.Pull(ctx, ref, ro)
	if err != nil {
		if missing {
			return nil, fmt.Errorf("not in the local image store %s, and %w", st.cache.Root(), err)
		}
		return nil, err
	}
	return st.images.Image(ctx, digest.String())
}

// buildArgValue is the value of the build arg k, "" when unset.
func buildArgValue(vals []string, k string) string {
	if v := buildArgMap(vals)[k]; v != nil {
		return *v
	}
	return ""
}

func buildArgMap(vals []string) map[string]*string {
	m := map[string]*string{}
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok {
			if env, set := os.LookupEnv(k); set {
				m[k] = &env
			} else {
				m[k] = nil
			}
			continue
		}
		m[k] = &val
	}
	return m
}

func keyValues(vals []string) map[string]string {
	m := map[string]string{}
	for _, v := range vals {
		k, val, _ := strings.Cut(v, "=")
		m[k] = val
	}
	return m
}

func hostPlatform() v1.Platform {
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

// platformList is the build's target platforms (--platform), normalized,
// each once, in order; the host's platform when none is given.
func (f *buildFlags) platformList() ([]v1.Platform, error) {
	if len(f.platforms) == 0 {
		return []v1.Platform{hostPlatform()}, nil
	}
	var out []v1.Platform
	seen := map[string]bool{}
	for _, s := range f.platforms {
		p, err := targetPlatform(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		if k := planner.FormatPlatform(p); !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// targetPlatform parses a --platform value and normalizes it as
// containerd does (linux/arm is linux/arm/v7, aarch64 is arm64); "" is
// the host's platform. Any platform can be a target: what a RUN needs is
// checked against this machine's emulators before the build starts.
func targetPlatform(s string) (v1.Platform, error) {
	if s == "" {
		return hostPlatform(), nil
	}
	p, err := cplatforms.Parse(s)
	if err != nil {
		return v1.Platform{}, fmt.Errorf("--platform %q: %w", s, err)
	}
	p = cplatforms.Normalize(p)
	return v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant, OSVersion: p.OSVersion, OSFeatures: p.OSFeatures}, nil
}

// projectID names "this Dockerfile in this context for this target": a
// build is explained against the previous build of the same project.
func projectID(contextDir, dockerfile, target string) string {
	absCtx, _ := filepath.Abs(contextDir)
	absDf := dockerfile
	if dockerfile != "-" {
		absDf, _ = filepath.Abs(dockerfile)
	}
	h := sha256.Sum256([]byte(absCtx + "\x00" + absDf + "\x00" + target))
	return hex.EncodeToString(h[:16])
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func checkNames(tags []string) error {
	for _, t := range tags {
		if _, err := name.NewTag(t, name.WeakValidation); err != nil {
			return fmt.Errorf("invalid tag %q: %w", t, err)
		}
	}
	return nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, so readers see the old content or the new, never a mix; mode
// 0600 (--iidfile, --metadata-file).
func writeFileAtomic(path string, data []byte) error {
	return writeFileWith(path, 0o600, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// writeFileWith writes path with what fill writes, through a temporary
// file of mode renamed into place; a device or a pipe (/dev/null,
// /dev/stdout) is written in place (outfile).
func writeFileWith(path string, mode os.FileMode, fill func(io.Writer) error) (err error) {
	inPlace, err := outfile.Target(path)
	if err != nil {
		return err
	}
	if inPlace {
		out, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		if err := fill(out); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err = fill(f); err != nil {
		f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
