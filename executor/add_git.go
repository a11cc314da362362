package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/internal/gitsource"
)

// gitOptions are how ADD fetches Git sources.
type gitOptions struct {
	// Advice lets git print its advice (BUILDKIT_GIT_ADVICE).
	Advice bool
	// Output receives git's messages: the step's output.
	Output io.Writer
	// SSH is the agent of ssh remotes (--ssh default), nil for none.
	SSH gitsource.Agent
}

// addGit is an ADD source that is a Git repository: resolved to a commit
// when the step is keyed (the commit is its key, as in BuildKit), fetched
// and checked out only when the step runs.
type addGit struct {
	res  *gitsource.Resolved
	keep bool
	opts gitOptions
	// dir is the checkout, once fetched.
	dir string
}

// addGitSource makes src a Git source of the plan when it is a Git URL,
// reporting whether it is one. The --checksum and --keep-git-dir flags
// merge with the URL's commit= and keep-git-dir= as in BuildKit; the
// checksum, checked against the resolved commit, leaves the key.
func (p *copyPlan) addGitSource(ctx context.Context, i int, src string) (bool, error) {
	ref, err := gitsource.Parse(src)
	if errors.Is(err, gitsource.ErrNotGit) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	if !p.req.Add {
		return true, errors.New("source can't be a git ref for COPY")
	}
	keep := p.req.KeepGitDir
	if ref.KeepGitDir != nil {
		if p.req.KeepGitDir && !*ref.KeepGitDir {
			return true, errors.New("inconsistent keep-git-dir configuration")
		}
		keep = *ref.KeepGitDir
	}
	if p.req.Checksum != "" && ref.Checksum != "" && p.req.Checksum != ref.Checksum {
		return true, fmt.Errorf("checksum mismatch %q != %q", p.req.Checksum, ref.Checksum)
	}
	if ref.Checksum == "" {
		ref.Checksum = p.req.Checksum
	}
	g := &addGit{keep: keep}
	if p.req.Git != nil {
		g.opts = *p.req.Git
	}
	err = gitsource.WithAgent(ctx, ref, g.opts.SSH, func(sock string) error {
		g.res, err = gitsource.Resolve(ctx, ref, gitsource.Options{Advice: g.opts.Advice, SSHAuthSock: sock})
		return err
	})
	if err != nil {
		return true, err
	}
	p.req.Checksum = "" // verified: the commit keys the step
	p.sources = append(p.sources, &copySource{index: i, written: ref.Remote, name: ref.Remote, git: g,
		entries: []copyEntry{{kind: copyDir, mode: fs.ModeDir | 0o755}}})
	return true, nil
}

// isGitURL reports whether an ADD source is a Git repository.
func isGitURL(src string) bool { return gitsource.IsGit(src) }

// gitField is the source's cache key field: its commit, kept .git,
// subdirectory and submodules.
func (g *addGit) field() string { return g.res.Key(g.keep) }

// fetch checks the commit out into a directory of tempDir and selects
// every file of it into s, as the tree whose contents go to the
// destination.
func (p *copyPlan) fetchGit(ctx context.Context, s *copySource) error {
	g := s.git
	dir, err := os.MkdirTemp(p.req.TempDir, "add-git-")
	if err != nil {
		return err
	}
	g.dir = dir
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	err = gitsource.WithAgent(ctx, g.res.Ref, g.opts.SSH, func(sock string) error {
		_, err := g.res.Fetch(ctx, dir, gitsource.Options{KeepGitDir: g.keep, Advice: g.opts.Advice,
			Output: g.opts.Output, SSHAuthSock: sock, TempDir: p.req.TempDir})
		return err
	})
	if err != nil {
		return err
	}
	tree, err := buildcontext.Open(dir, nil)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	top, err := copyEntryOf(tree, "", ".", fi)
	if err != nil {
		return err
	}
	s.entries = []copyEntry{top}
	return p.selectDir(ctx, tree, s, ".")
}

// applyGit fetches a Git source and copies its tree into the destination.
func (p *copyPlan) applyGit(ctx context.Context, rootfs string, s *copySource, own copyOwner) error {
	if err := p.fetchGit(ctx, s); err != nil {
		return err
	}
	return p.applyTree(ctx, rootfs, p.dest, s, own, false)
}

// closeGit removes a Git source's checkout.
func (g *addGit) close() error {
	if g == nil || g.dir == "" {
		return nil
	}
	err := os.RemoveAll(g.dir)
	g.dir = ""
	return err
}

// gitOptions are the build's options for the Git sources of a step.
func (b *build) gitOptions(sc *stepCtx) *gitOptions {
	o := &gitOptions{Advice: b.e.opts.GitAdvice, Output: b.stepOutput(sc)}
	if a, ok := b.e.opts.SSH["default"]; ok {
		o.SSH = a
	}
	return o
}
