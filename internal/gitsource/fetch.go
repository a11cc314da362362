package gitsource

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Options are how a source is fetched.
type Options struct {
	// KeepGitDir keeps the checkout's .git directory (ADD --keep-git-dir,
	// keep-git-dir=true, BUILDKIT_CONTEXT_KEEP_GIT_DIR); it has no effect
	// with a subdirectory, as in BuildKit.
	KeepGitDir bool
	// Advice lets git print its advice, such as the detached-HEAD note
	// (BUILDKIT_GIT_ADVICE=1); off by default.
	Advice bool
	// MTimeCommit sets every checked-out file's mtime to the commit's time.
	MTimeCommit bool
	// Output receives git's messages (progress, advice); nil drops them.
	Output io.Writer
	// SSHAuthSock is the agent socket for ssh remotes ("" for none).
	SSHAuthSock string
	// TempDir holds the repository while it is fetched ("" for the
	// system's).
	TempDir string
}

// Resolved is a Ref resolved against its remote.
type Resolved struct {
	*Ref
	// Name is what is fetched: the ref as given, the remote's default
	// branch for none, or a commit.
	Name string
	// Full is the full ref Name matched on the remote (refs/heads/x,
	// refs/tags/v1), or the commit.
	Full string
	// Object is what Name points to: a commit, or an annotated tag.
	Object string
	// Commit is the commit an annotated tag points to; Object otherwise.
	Commit string
}

// checksumRE is what ADD --checksum and ?commit= take for a git source.
var checksumRE = regexp.MustCompile(`^[a-fA-F0-9]+$`)

// defaultBranchRE finds the branch of `ls-remote --symref URL HEAD`.
var defaultBranchRE = regexp.MustCompile(`refs/heads/(\S+)`)

// Resolve finds the commit r names with `git ls-remote`, without fetching
// anything, and checks r's Checksum against it: BuildKit's errors
// "repository does not contain ref", "expected checksum to match" and
// "invalid checksum ... expected hex commit hash".
func Resolve(ctx context.Context, r *Ref, opts Options) (*Resolved, error) {
	if r.Checksum != "" && !checksumRE.MatchString(r.Checksum) {
		return nil, fmt.Errorf("invalid checksum %s for Git URL, expected hex commit hash", r.Checksum)
	}
	if IsCommit(r.Ref) {
		if r.Checksum != "" && !strings.HasPrefix(r.Ref, r.Checksum) {
			return nil, fmt.Errorf("expected checksum to match %s, got %s", r.Checksum, r.Ref)
		}
		return &Resolved{Ref: r, Name: r.Ref, Full: r.Ref, Object: r.Ref, Commit: r.Ref}, nil
	}
	git := cli{advice: opts.Advice, sshSock: opts.SSHAuthSock}
	ref := r.Ref
	if ref == "" {
		out, err := git.run(ctx, "ls-remote", "--symref", "--", r.Remote, "HEAD")
		if err != nil {
			return nil, fmt.Errorf("error fetching default branch for repository %s: %w", redact(r.Remote), err)
		}
		m := defaultBranchRE.FindStringSubmatch(string(out))
		if m == nil {
			return nil, fmt.Errorf("could not find default branch for repository: %s", redact(r.Remote))
		}
		ref = m[1]
		if err := validRef(ref); err != nil {
			return nil, err
		}
	}
	out, err := git.run(ctx, "ls-remote", "--", r.Remote, ref, ref+"^{}")
	if err != nil {
		return nil, fmt.Errorf("failed to fetch remote %s: %w", redact(r.Remote), err)
	}
	return matchRef(r, ref, string(out))
}

// matchRef picks ref's object in ls-remote output as git checkout would:
// a full ref first, then a branch, then a tag (an annotated tag's commit
// beside it).
func matchRef(r *Ref, ref, out string) (*Resolved, error) {
	var (
		full      = "refs/" + strings.TrimPrefix(ref, "refs/")
		head      = "refs/heads/" + strings.TrimPrefix(ref, "refs/heads/")
		tag       = "refs/tags/" + strings.TrimPrefix(ref, "refs/tags/")
		peeledTag = tag + "^{}"
	)
	var sha, headSha, tagSha, peeled, used string
	for _, line := range strings.Split(out, "\n") {
		lineSha, lineRef, _ := strings.Cut(line, "\t")
		switch lineRef {
		case head:
			headSha = lineSha
		case tag:
			tagSha = lineSha
		case peeledTag:
			peeled = lineSha
		case full:
			sha = lineSha
		}
	}
	if sha != "" {
		used = full
	} else if headSha != "" {
		sha, used = headSha, head
	}
	if sha != "" {
		peeled = ""
	} else {
		sha, used = tagSha, tag
	}
	if sha == "" {
		return nil, fmt.Errorf("repository does not contain ref %s, output: %q", ref, out)
	}
	if !IsCommit(sha) {
		return nil, fmt.Errorf("invalid commit sha %q", sha)
	}
	if r.Checksum != "" && !strings.HasPrefix(sha, r.Checksum) && !strings.HasPrefix(peeled, r.Checksum) {
		got := sha
		if peeled != "" {
			got += " or " + peeled
		}
		return nil, fmt.Errorf("expected checksum to match %s, got %s", r.Checksum, got)
	}
	res := &Resolved{Ref: r, Name: ref, Full: used, Object: sha, Commit: sha}
	if peeled != "" {
		res.Commit = peeled
	}
	return res, nil
}

// Key is the source's cache key, as BuildKit's: the commit (the tag
// object with a kept .git, whose content depends on it), whether .git is
// kept and under which full ref, the subdirectory, and whether submodules
// are skipped. Two remotes with the same commit give the same key, and so
// do two spellings of a ref (v1, refs/tags/v1, ?tag=v1).
func (res *Resolved) Key(keepGitDir bool) string {
	keepGitDir = keepGitDir && res.SubDir == ""
	key := res.Commit
	if keepGitDir {
		key = res.Object + ".git#" + res.Full
	}
	if res.SubDir != "" {
		key += ":" + res.SubDir
	}
	if !res.submodules() {
		key += "(skip-submodules)"
	}
	return key
}

func (res *Resolved) submodules() bool { return res.Submodules == nil || *res.Submodules }

// Checkout is a fetched source.
type Checkout struct {
	// CommitTime is the commit's committer time.
	CommitTime time.Time
}

// Fetch fetches the resolved commit and checks it out into dest, an
// empty directory: the whole tree (with .git when opts.KeepGitDir and no
// subdirectory) or the subdirectory's contents, submodules included unless
// the Ref says submodules=false. The repository is fetched into a
// temporary directory of opts.TempDir that is removed on return.
func (res *Resolved) Fetch(ctx context.Context, dest string, opts Options) (_ *Checkout, err error) {
	tmp, err := os.MkdirTemp(opts.TempDir, "git-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if rerr := os.RemoveAll(tmp); rerr != nil && err == nil {
			err = rerr
		}
	}()
	git := cli{advice: opts.Advice, sshSock: opts.SSHAuthSock, stderr: opts.Output}
	bare := filepath.Join(tmp, "repo.git")
	if err := res.fetchBare(ctx, git, bare); err != nil {
		return nil, err
	}
	bgit := git.with(bare, "")
	keep := opts.KeepGitDir && res.SubDir == ""
	work := dest
	if res.SubDir != "" {
		work = filepath.Join(tmp, "checkout")
		if err := os.Mkdir(work, 0o755); err != nil {
			return nil, err
		}
	}
	gitDir := bare
	if keep {
		if gitDir, err = res.checkoutKeep(ctx, git, bgit, bare, work); err != nil {
			return nil, err
		}
	} else if _, err := git.with(bare, work).run(ctx, "checkout", "--no-overlay", res.Name, "--", "."); err != nil {
		return nil, fmt.Errorf("failed to checkout remote %s: %w", redact(res.Remote), err)
	}
	if res.submodules() {
		if _, err := git.with(gitDir, work).run(ctx, "submodule", "update", "--init", "--recursive", "--depth=1"); err != nil {
			return nil, fmt.Errorf("failed to update submodules for %s: %w", redact(res.Remote), err)
		}
	}
	if res.SubDir != "" {
		if err := moveSubDir(work, res.SubDir, dest); err != nil {
			return nil, err
		}
	}
	co := &Checkout{}
	out, err := bgit.run(ctx, "log", "-1", "--format=%ct", res.Name+"^{commit}")
	if err != nil {
		return nil, fmt.Errorf("failed to get commit time for %s: %w", redact(res.Remote), err)
	}
	secs, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("failed to parse commit timestamp %q: %w", out, err)
	}
	co.CommitTime = time.Unix(secs, 0).UTC()
	if opts.MTimeCommit {
		if err := setMTimes(dest, co.CommitTime); err != nil {
			return nil, err
		}
	}
	return co, nil
}

// fetchBare makes a bare repository at dir holding the resolved ref, as
// BuildKit's shared repository does: a shallow fetch of the ref into a
// local tag, or of the commit with the remote's tags.
func (res *Resolved) fetchBare(ctx context.Context, git cli, dir string) error {
	args := []string{"-c", "init.defaultBranch=master", "init", "--bare"}
	if len(res.Object) == 64 {
		args = append(args, "--object-format=sha256")
	}
	if _, err := git.run(ctx, append(args, dir)...); err != nil {
		return fmt.Errorf("failed to init repo at %s: %w", dir, err)
	}
	bgit := git.with(dir, "")
	if _, err := bgit.run(ctx, "remote", "add", "origin", res.Remote); err != nil {
		return fmt.Errorf("failed add origin repo at %s: %w", dir, err)
	}
	ref := res.Name
	fetch := []string{"fetch", "--depth=1", "--no-tags", "origin", "--force", "--", ref + ":" + localRef(ref)}
	if IsCommit(ref) {
		fetch = []string{"fetch", "--tags", "origin", ref}
	}
	if _, err := bgit.run(ctx, fetch...); err != nil {
		return fmt.Errorf("failed to fetch remote %s: %w", redact(res.Remote), err)
	}
	out, err := bgit.run(ctx, "rev-parse", "--verify", "--end-of-options", ref)
	if err != nil {
		return fmt.Errorf("failed to rev-parse %s for %s: %w", ref, redact(res.Remote), err)
	}
	got := strings.TrimSpace(string(out))
	if !strings.HasPrefix(got, res.Object) && got != res.Commit {
		return fmt.Errorf("fetched ref %s is %s, not the resolved commit %s (the remote changed while building)", ref, got, res.Object)
	}
	if res.Checksum != "" && !strings.HasPrefix(got, res.Checksum) {
		peeled, err := bgit.run(ctx, "rev-parse", "--verify", "--end-of-options", ref+"^{}")
		if err != nil || !strings.HasPrefix(strings.TrimSpace(string(peeled)), res.Checksum) {
			return fmt.Errorf("expected checksum to match %s, got %s", res.Checksum, got)
		}
	}
	return nil
}

// localRef is where the bare repository keeps a fetched ref: tags stay
// tags, other refs go below refs/tags/ (as BuildKit), so that a later
// fetch of the checkout finds them by the same name.
func localRef(ref string) string {
	if strings.HasPrefix(ref, "refs/tags/") {
		return ref
	}
	return "tags/" + ref
}

// checkoutKeep checks the ref out into work with its own .git, made as
// BuildKit makes it: a fresh repository that fetches the ref (depth 1)
// from the bare one over file://, a detached HEAD at the commit, origin
// set to the remote, no reflog, no FETCH_HEAD. It returns the .git path.
func (res *Resolved) checkoutKeep(ctx context.Context, git, bgit cli, bare, work string) (string, error) {
	dotGit := filepath.Join(work, ".git")
	wgit := git.with(dotGit, work)
	args := []string{"-c", "init.defaultBranch=master", "init"}
	if len(res.Object) == 64 {
		args = append(args, "--object-format=sha256")
	}
	if _, err := wgit.run(ctx, args...); err != nil {
		return "", err
	}
	// file:// rather than a path: no local-clone shortcuts (hardlinks,
	// alternates) that could reach other host files.
	if _, err := wgit.run(ctx, "remote", "add", "origin", "file://"+bare); err != nil {
		return "", err
	}
	out, err := bgit.run(ctx, "cat-file", "-t", res.Name)
	if err != nil {
		return "", err
	}
	pull := res.Name
	switch {
	case strings.TrimSpace(string(out)) == "tag":
		target := pull
		if !strings.HasPrefix(target, "refs/tags/") {
			target = "refs/tags/" + target
		}
		pull += ":" + target
	case IsCommit(pull):
		pull = "refs/builder/" + pull
		if _, err := bgit.run(ctx, "update-ref", pull, res.Name); err != nil {
			return "", err
		}
	default:
		pull += ":" + pull
	}
	if _, err := wgit.run(ctx, "fetch", "-u", "--depth=1", "--", "origin", pull); err != nil {
		return "", err
	}
	if _, err := wgit.run(ctx, "checkout", "FETCH_HEAD"); err != nil {
		return "", fmt.Errorf("failed to checkout remote %s: %w", redact(res.Remote), err)
	}
	if _, err := wgit.run(ctx, "remote", "set-url", "origin", redact(res.Remote)); err != nil {
		return "", fmt.Errorf("failed to set remote origin to %s: %w", redact(res.Remote), err)
	}
	if _, err := wgit.run(ctx, "reflog", "expire", "--all", "--expire=now"); err != nil {
		return "", fmt.Errorf("failed to expire reflog for remote %s: %w", redact(res.Remote), err)
	}
	if err := os.Remove(filepath.Join(dotGit, "FETCH_HEAD")); err != nil && !isNotExist(err) {
		return "", err
	}
	return dotGit, nil
}

// moveSubDir moves the entries of work/sub into dest. Every component of
// sub must be a real directory inside work: a symlink (which could point
// anywhere on the host) or a file is an error.
func moveSubDir(work, sub, dest string) error {
	root, err := os.OpenRoot(work)
	if err != nil {
		return err
	}
	defer root.Close()
	p := ""
	for _, part := range strings.Split(sub, "/") {
		p = filepath.Join(p, part)
		fi, err := root.Lstat(p)
		if err != nil {
			return fmt.Errorf("invalid subdir %s: %w", sub, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("invalid subdir %s: git subpath %q contains non-directory %q", sub, sub, p)
		}
	}
	d, err := root.Open(sub)
	if err != nil {
		return fmt.Errorf("failed to open subdir %v: %w", sub, err)
	}
	names, err := d.Readdirnames(0)
	d.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := os.Rename(filepath.Join(work, sub, n), filepath.Join(dest, n)); err != nil {
			return err
		}
	}
	return nil
}

// setMTimes sets the mtime (and atime) of everything below dir, symlinks
// themselves included, to t.
func setMTimes(dir string, t time.Time) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return lutimes(p, t)
		}
		return os.Chtimes(p, t, t)
	})
}

func lutimes(p string, t time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}
