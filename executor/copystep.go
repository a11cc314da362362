package executor

import (
	"context"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/builder-dev/builder/cache"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// xferArgs are the flags and operands shared by COPY and ADD.
type xferArgs struct {
	add                    bool
	params                 instructions.SourcesAndDest
	chown, chmod, checksum string
	link, parents          bool
	keepGitDir             bool
	exclude                []string
	// unpack is ADD --unpack: nil extracts local archives only.
	unpack *bool
}

func copyArgsOf(c *instructions.CopyCommand) xferArgs {
	return xferArgs{params: c.SourcesAndDest, chown: c.Chown, chmod: c.Chmod,
		link: c.Link, parents: c.Parents, exclude: c.ExcludePatterns}
}

func addArgsOf(c *instructions.AddCommand) xferArgs {
	a := xferArgs{add: true, params: c.SourcesAndDest, chown: c.Chown, chmod: c.Chmod,
		link: c.Link, checksum: c.Checksum, exclude: c.ExcludePatterns, unpack: c.Unpack}
	if c.KeepGitDir != nil {
		a.keepGitDir = *c.KeepGitDir
	}
	return a
}

// historyText is BuildKit's history entry for a COPY or ADD.
func (a xferArgs) historyText() string {
	var b strings.Builder
	if a.add {
		b.WriteString("ADD")
	} else {
		b.WriteString("COPY")
	}
	if a.parents {
		b.WriteString(" --parents")
	}
	if a.chown != "" {
		b.WriteString(" --chown=" + a.chown)
	}
	if a.chmod != "" {
		b.WriteString(" --chmod=" + a.chmod)
	}
	for _, s := range a.params.SourcePaths {
		b.WriteString(" " + s)
	}
	for _, s := range a.params.SourceContents {
		b.WriteString(" <<" + s.Path)
	}
	b.WriteString(" " + a.params.DestPath + " # buildkit")
	return b.String()
}

// dispatchCopy runs a COPY or ADD: sources from the build context, an
// earlier stage or an image.
func (b *build) dispatchCopy(ctx context.Context, sc *stepCtx, a xferArgs) error {
	if a.link && chownByName(a.chown) {
		return fmt.Errorf("--chown=%s: user and group names can't be resolved when used with --link, use numeric uid[:gid] instead", a.chown)
	}
	req := copyRequest{
		Add:        a.add,
		Line:       sc.step.Line,
		Sources:    a.params.SourcePaths,
		Heredocs:   a.params.SourceContents,
		Dest:       a.params.DestPath,
		Workdir:    sc.s.img.Config.WorkingDir,
		Chown:      a.chown,
		Chmod:      a.chmod,
		Checksum:   a.checksum,
		KeepGitDir: a.keepGitDir,
		Link:       a.link,
		Parents:    a.parents,
		Exclude:    a.exclude,
		Unpack:     a.unpack,
		HTTPClient: b.e.opts.HTTPClient,
		URLMemo:    storeURLMemo{b.e.opts.Cache},
		Git:        b.gitOptions(sc),
		TempDir:    b.e.opts.TempDir,
		Warn:       b.stepWarn(sc),
	}
	var parents []string
	switch {
	case sc.step.FromStage != nil:
		src, err := b.wait(ctx, sc.step.FromStage.Index)
		if err != nil {
			return err
		}
		parents = src.parents()
	case sc.step.FromImage != nil:
		src, err := b.imageState(ctx, sc.step.FromImage.Digest)
		if err != nil {
			return fmt.Errorf("image %s: %w", sc.step.FromImage.Ref, err)
		}
		parents = src.parents()
	case sc.step.FromContext != nil:
		nc, err := openNamedContext(sc.step.FromContext)
		if err != nil {
			return err
		}
		req.Context, req.Hash = nc, b.e.opts.Cache.HashFileMeta
		return b.copyFrom(ctx, sc, a, req)
	default:
		if b.e.opts.Context == nil && len(a.params.SourcePaths) > 0 && !allURLs(a.params.SourcePaths) {
			return fmt.Errorf("no build context: %s needs one", strings.ToUpper(sc.step.Cmd.Name()))
		}
		req.Context = b.e.opts.Context
		req.Hash = b.e.opts.Cache.HashFileMeta
		return b.copyFrom(ctx, sc, a, req)
	}
	return b.withView(ctx, parents, func(root string) error {
		req.SrcRoot = root
		return b.copyFrom(ctx, sc, a, req)
	})
}

func (b *build) copyFrom(ctx context.Context, sc *stepCtx, a xferArgs, req copyRequest) error {
	p, err := copyPrepare(ctx, req)
	if err != nil {
		return err
	}
	defer p.Close()
	op := "COPY"
	if a.add {
		op = "ADD"
	}
	dest := a.params.DestPath
	if !path.IsAbs(dest) {
		dest = path.Join(resolveWorkdir(sc.s.img.Config.WorkingDir, "."), dest)
		if strings.HasSuffix(a.params.DestPath, "/") || a.params.DestPath == "." {
			dest += "/"
		}
	}
	in := cache.Inputs{Op: op, Fields: append([]cache.Field{{Name: "dest", Value: dest}}, p.Fields()...), Files: p.Inputs()}
	return b.keyed(ctx, sc, change{inputs: in, createdBy: a.historyText(), apply: p.Apply})
}

func allURLs(srcs []string) bool {
	for _, s := range srcs {
		if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") && !isGitURL(s) {
			return false
		}
	}
	return true
}

// withView mounts a read-only view of layers and calls fn with its root.
func (b *build) withView(ctx context.Context, layers []string, fn func(root string) error) (err error) {
	key := "view-" + b.activeKey()
	mounts, err := b.e.opts.Snapshotter.View(ctx, key, layers)
	if err != nil {
		return fmt.Errorf("prepare view: %w", err)
	}
	defer func() {
		if rerr := b.e.opts.Snapshotter.Remove(context.WithoutCancel(ctx), key); rerr != nil && err == nil {
			err = rerr
		}
	}()
	return b.withMounted(ctx, mounts, fn)
}

// stepWarn returns a sink for a step's non-fatal problems: they go to the
// step's output in the progress display.
func (b *build) stepWarn(sc *stepCtx) func(msg string) {
	out := b.e.opts.Progress.Output(sc.ev)
	return func(msg string) { fmt.Fprintf(out, "warning: %s\n", msg) }
}

// chownByName reports whether a --chown value names a user or a group
// rather than giving numeric ids: --link cannot resolve names, since its
// layer must not depend on the files below it (BuildKit's rule).
func chownByName(chown string) bool {
	if chown == "" {
		return false
	}
	user, group, _ := strings.Cut(chown, ":")
	for _, part := range []string{user, group} {
		if part == "" {
			continue
		}
		if _, err := strconv.ParseUint(part, 10, 32); err != nil {
			return true
		}
	}
	return false
}
