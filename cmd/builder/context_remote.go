package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/gitsource"
	"github.com/builder-dev/builder/internal/remotecontext"
	"github.com/builder-dev/builder/planner"
	securejoin "github.com/cyphar/filepath-securejoin"
)

// buildInputs is the build context once it is on disk: a local
// directory as given, or a Git repository, an HTTP(S) download or a tar on
// standard input fetched into a scratch directory of the store.
type buildInputs struct {
	// dir is the context directory.
	dir string
	// id names the context for projectID: the directory, the URL or "-".
	id string
	// file is the Dockerfile to read: -f as given, or resolved inside a
	// fetched context; display is its name in messages ("" for the
	// default).
	file, display string
	// epoch is the context's time for SOURCE_DATE_EPOCH=context: the
	// commit's, the download's Last-Modified or newest archived file;
	// nil for a local context.
	epoch *time.Time
	// sources holds what was fetched; nil for a local context.
	sources *sourceScratch
	// gitURL and gitCommit, httpURL and httpDigest are a remote context
	// and what it resolved to (its provenance).
	gitURL, gitCommit, httpURL, httpDigest string
	// named are the Git and HTTP(S) named contexts fetched, by name, with
	// what each resolved to (provenance materials of the steps using them).
	named map[string]remoteSource
}

// remoteSource is what a fetched Git or HTTP(S) context resolved to.
type remoteSource struct {
	gitURL, commit  string // a Git context
	httpURL, digest string // an HTTP(S) download
}

// sourceScratch is a scratch directory of the store holding fetched
// sources for as long as the build runs.
type sourceScratch struct {
	store *cache.Store
	dir   *cache.Scratch
}

// newSourceScratch opens the store's scratch area for fetched sources.
func newSourceScratch(a *app) (*sourceScratch, error) {
	st, err := a.openCache()
	if err != nil {
		return nil, err
	}
	sc, err := st.NewScratch(cache.Temp, "sources")
	if err != nil {
		st.Close()
		return nil, err
	}
	return &sourceScratch{store: st, dir: sc}, nil
}

// mkdir makes a new directory for one source.
func (s *sourceScratch) mkdir(name string) (string, error) {
	d, err := os.MkdirTemp(s.dir.Path(), name+"-")
	if err != nil {
		return "", err
	}
	return d, os.Chmod(d, 0o755)
}

func (s *sourceScratch) Close() error {
	if s == nil {
		return nil
	}
	return errors.Join(s.dir.Close(), s.store.Close())
}

// sourceOptions are the build args that change how sources are fetched.
type sourceOptions struct {
	keepGitDir bool // BUILDKIT_CONTEXT_KEEP_GIT_DIR
	gitAdvice  bool // BUILDKIT_GIT_ADVICE
	// mtimeCommit gives a Git context's files the commit's time, as
	// BuildKit does when SOURCE_DATE_EPOCH is set.
	mtimeCommit bool
	// ssh is the --ssh default agent, for ssh Git URLs (nil for none).
	ssh gitsource.Agent
}

func sourceOptionsOf(f *buildFlags) (sourceOptions, error) {
	keep, err := buildArgBool(f.buildArgs, "BUILDKIT_CONTEXT_KEEP_GIT_DIR")
	if err != nil {
		return sourceOptions{}, err
	}
	advice, err := buildArgBool(f.buildArgs, "BUILDKIT_GIT_ADVICE")
	if err != nil {
		return sourceOptions{}, err
	}
	o := sourceOptions{keepGitDir: keep, gitAdvice: advice, mtimeCommit: buildArgValue(f.buildArgs, "SOURCE_DATE_EPOCH") != ""}
	agents, err := sshAgents(f.ssh)
	if err != nil {
		return sourceOptions{}, err
	}
	if ag, ok := agents["default"]; ok {
		o.ssh = ag
	}
	return o, nil
}

// resolveInputs puts the build context CONTEXT on disk, as docker buildx
// takes it: a directory; "-", a tar archive (or, if stdin is no archive, a
// Dockerfile with an empty context) on standard input; a Git URL; or an
// HTTP(S) URL of a tar archive (plain, gzip, bzip2, xz or zstd) or of a
// single Dockerfile. With a fetched context a relative -f names a file
// inside it.
func resolveInputs(ctx context.Context, a *app, f *buildFlags, arg string) (in *buildInputs, err error) {
	if !isRemoteContext(arg) {
		if err := checkContextDir(arg); err != nil {
			return nil, err
		}
		return &buildInputs{dir: arg, id: arg, file: f.file}, nil
	}
	if arg == "-" && f.file == "-" {
		return nil, errors.New("invalid argument: can't use stdin for both build context and dockerfile")
	}
	opts, err := sourceOptionsOf(f)
	if err != nil {
		return nil, err
	}
	sc, err := newSourceScratch(a)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			sc.Close()
		}
	}()
	in = &buildInputs{id: arg, sources: sc}
	var single string // a Dockerfile fetched alone
	switch {
	case arg == "-":
		single, err = in.fromStdin(ctx, a)
	case remotecontext.IsURL(arg) && !gitsource.IsGit(arg):
		single, err = in.fromHTTP(ctx, arg)
	default:
		err = in.fromGit(ctx, a, arg, opts)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case single != "":
		// As BuildKit: a URL (or stdin) that is no archive is the
		// Dockerfile, whatever -f says.
		in.file, in.display = single, "Dockerfile"
	case f.file == "" || f.file == "-" || filepath.IsAbs(f.file):
		in.file = f.file
	default:
		p, err := securejoin.SecureJoin(in.dir, f.file)
		if err != nil {
			return nil, fmt.Errorf("-f %s: %w", f.file, err)
		}
		in.file, in.display = p, f.file
	}
	return in, nil
}

// isRemoteContext reports whether CONTEXT is fetched rather than a
// directory: "-", a Git URL or an HTTP(S) URL.
func isRemoteContext(arg string) bool {
	return arg == "-" || remotecontext.IsURL(arg) || gitsource.IsGit(arg)
}

// fromStdin reads the context from standard input: a tar archive is
// extracted into the context directory; anything else is the Dockerfile,
// whose path it returns, with an empty context.
func (in *buildInputs) fromStdin(ctx context.Context, a *app) (string, error) {
	dl, err := in.sources.mkdir("stdin")
	if err != nil {
		return "", err
	}
	file, err := remotecontext.Save(a.stdin, filepath.Join(dl, "stdin"))
	if err != nil {
		return "", fmt.Errorf("read build context from stdin: %w", err)
	}
	if in.dir, err = in.sources.mkdir("context"); err != nil {
		return "", err
	}
	if !file.Archive {
		return file.Path, nil
	}
	return "", remotecontext.Extract(ctx, file, in.dir)
}

// fromHTTP downloads the context: an archive is extracted into the
// context directory; another file is the Dockerfile, kept in the context
// as "context" (BuildKit's name for it), whose path it returns.
func (in *buildInputs) fromHTTP(ctx context.Context, url string) (string, error) {
	dl, err := in.sources.mkdir("http")
	if err != nil {
		return "", err
	}
	if in.dir, err = in.sources.mkdir("context"); err != nil {
		return "", err
	}
	file, err := remotecontext.Download(ctx, nil, url, dl, "context")
	if err != nil {
		return "", fmt.Errorf("unable to prepare context: %w", err)
	}
	sum, err := sha256File(file.Path)
	if err != nil {
		return "", err
	}
	in.httpURL, in.httpDigest = url, "sha256:"+sum
	if in.epoch, err = remotecontext.Epoch(file); err != nil {
		return "", err
	}
	if !file.Archive {
		p := filepath.Join(in.dir, "context")
		return p, os.Rename(file.Path, p)
	}
	return "", remotecontext.Extract(ctx, file, in.dir)
}

// fromGit fetches a Git context: the commit of its ref (or the remote's
// default branch), with .git when asked for (keep-git-dir=, or
// BUILDKIT_CONTEXT_KEEP_GIT_DIR) and submodules unless submodules=false;
// the context is the subdirectory when the URL names one.
func (in *buildInputs) fromGit(ctx context.Context, a *app, url string, o sourceOptions) error {
	co, err := fetchGit(ctx, a, in.sources, url, o)
	if err != nil {
		return err
	}
	in.dir, in.epoch = co.dir, &co.commitTime
	in.gitURL, in.gitCommit = url, co.commit
	return nil
}

// gitCheckout is a fetched Git source.
type gitCheckout struct {
	dir        string
	commitTime time.Time
	commit     string
}

// fetchGit fetches a Git URL into a new directory of sc, printing git's
// messages (the detached-HEAD advice with BUILDKIT_GIT_ADVICE=1) on
// standard error.
func fetchGit(ctx context.Context, a *app, sc *sourceScratch, url string, o sourceOptions) (*gitCheckout, error) {
	ref, err := gitsource.Parse(url)
	if err != nil {
		return nil, err
	}
	keep := o.keepGitDir || (ref.KeepGitDir != nil && *ref.KeepGitDir)
	dir, err := sc.mkdir("git")
	if err != nil {
		return nil, err
	}
	var co *gitsource.Checkout
	var commit string
	err = gitsource.WithAgent(ctx, ref, o.ssh, func(sock string) error {
		gopts := gitsource.Options{KeepGitDir: keep, Advice: o.gitAdvice, MTimeCommit: o.mtimeCommit,
			Output: a.stderr, SSHAuthSock: sock, TempDir: sc.dir.Path()}
		res, err := gitsource.Resolve(ctx, ref, gopts)
		if err != nil {
			return err
		}
		commit = res.Commit
		co, err = res.Fetch(ctx, dir, gopts)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &gitCheckout{dir: dir, commitTime: co.CommitTime, commit: commit}, nil
}

// dockerfileID names the Dockerfile read (dfFile) for projectID: the file,
// or in a fetched context its name there, which stays the same from one
// build to the next.
func (in *buildInputs) dockerfileID(dfFile string) string {
	if in.sources == nil || dfFile == "-" {
		return dfFile
	}
	name := in.display
	if name == "" {
		name = filepath.Base(dfFile)
	}
	return in.id + "#" + name
}

// fetchContexts fetches the named contexts that are URLs, as BuildKit
// takes them: a Git URL is its checkout (the commit's time its epoch); an
// HTTP(S) URL is a directory holding the download as the file "context",
// not extracted, with its Last-Modified as its time, else the Unix epoch
// (its Last-Modified, else its newest archived file, is its epoch, for
// SOURCE_DATE_EPOCH=NAME).
func (in *buildInputs) fetchContexts(ctx context.Context, a *app, f *buildFlags, contexts []planner.NamedContext) error {
	for i := range contexts {
		nc := &contexts[i]
		if nc.URL == "" {
			continue
		}
		if in.sources == nil {
			sc, err := newSourceScratch(a)
			if err != nil {
				return err
			}
			in.sources = sc
		}
		if err := in.fetchContext(ctx, a, f, nc); err != nil {
			return fmt.Errorf("build context %s: %w", nc.Name, err)
		}
	}
	return nil
}

func (in *buildInputs) fetchContext(ctx context.Context, a *app, f *buildFlags, nc *planner.NamedContext) error {
	if gitsource.IsGit(nc.URL) || !remotecontext.IsURL(nc.URL) {
		o, err := sourceOptionsOf(f)
		if err != nil {
			return err
		}
		o.keepGitDir, o.mtimeCommit = false, false // BuildKit: for the main context only
		co, err := fetchGit(ctx, a, in.sources, nc.URL, o)
		if err != nil {
			return err
		}
		nc.Dir, nc.Epoch = co.dir, &co.commitTime
		in.remember(nc.Name, remoteSource{gitURL: nc.URL, commit: co.commit})
		return nil
	}
	dir, err := in.sources.mkdir("context")
	if err != nil {
		return err
	}
	file, err := remotecontext.Download(ctx, nil, nc.URL, dir, "context")
	if err != nil {
		return err
	}
	// As BuildKit's HTTP source: the download's time is its Last-Modified,
	// else the Unix epoch.
	mtime := time.Unix(0, 0)
	if file.LastModified != nil {
		mtime = *file.LastModified
	}
	if err := os.Chtimes(file.Path, mtime, mtime); err != nil {
		return err
	}
	if nc.Epoch, err = remotecontext.Epoch(file); err != nil {
		return err
	}
	sum, err := sha256File(file.Path)
	if err != nil {
		return err
	}
	nc.Dir = dir
	in.remember(nc.Name, remoteSource{httpURL: nc.URL, digest: "sha256:" + sum})
	return nil
}

func (in *buildInputs) remember(name string, src remoteSource) {
	if in.named == nil {
		in.named = map[string]remoteSource{}
	}
	in.named[name] = src
}
