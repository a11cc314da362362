package executor

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/util/system"
)

// copyRequestOf is a COPY's request: its flags and operands, once.
func copyRequestOf(c *instructions.CopyCommand) copyRequest {
	return copyRequest{Sources: c.SourcePaths, Heredocs: c.SourceContents, Dest: c.DestPath,
		Chown: c.Chown, Chmod: c.Chmod, Link: c.Link, Parents: c.Parents, Exclude: c.ExcludePatterns}
}

// addRequestOf is an ADD's request: its flags and operands, once.
func addRequestOf(c *instructions.AddCommand) copyRequest {
	req := copyRequest{Add: true, Sources: c.SourcePaths, Heredocs: c.SourceContents, Dest: c.DestPath,
		Chown: c.Chown, Chmod: c.Chmod, Link: c.Link, Checksum: c.Checksum, Exclude: c.ExcludePatterns,
		Unpack: c.Unpack}
	if c.KeepGitDir != nil {
		req.KeepGitDir = *c.KeepGitDir
	}
	return req
}

// historyText is BuildKit's history entry for a COPY or ADD.
func (req copyRequest) historyText() string {
	var b strings.Builder
	if req.Add {
		b.WriteString("ADD")
	} else {
		b.WriteString("COPY")
	}
	if req.Parents {
		b.WriteString(" --parents")
	}
	if req.Chown != "" {
		b.WriteString(" --chown=" + req.Chown)
	}
	if req.Chmod != "" {
		b.WriteString(" --chmod=" + req.Chmod)
	}
	for _, s := range req.Sources {
		b.WriteString(" " + s)
	}
	for _, s := range req.Heredocs {
		b.WriteString(" <<" + s.Path)
	}
	b.WriteString(" " + req.Dest + " # buildkit")
	return b.String()
}

// dispatchCopy runs a COPY or ADD: sources from the build context, an
// earlier stage, an image or a named context (the step's planner.Source).
func (b *build) dispatchCopy(ctx context.Context, sc *stepCtx, req copyRequest) error {
	if req.Link && chownByName(req.Chown) {
		return fmt.Errorf("--chown=%s: user and group names can't be resolved when used with --link, use numeric uid[:gid] instead", req.Chown)
	}
	if sc.step.From == nil && b.e.opts.Context == nil && len(req.Sources) > 0 && !allURLs(req.Sources) {
		return fmt.Errorf("no build context: %s needs one", strings.ToUpper(sc.step.Cmd.Name()))
	}
	req.Line = sc.step.Line
	req.Workdir = system.ToSlash(sc.s.img.Config.WorkingDir, sc.st.Platform.OS)
	req.OS = sc.st.Platform.OS
	req.HTTPClient = b.e.opts.HTTPClient
	req.URLMemo = storeURLMemo{b.e.opts.Cache}
	req.Git = b.gitOptions(sc)
	req.TempDir = b.e.opts.TempDir
	req.Warn = b.stepWarn(sc)
	if readsLayers(sc.step.From) {
		return b.copyFromLayers(ctx, sc, req)
	}
	src, err := b.resolveSource(ctx, sc.step.From)
	if err != nil {
		return err
	}
	b.readFrom(&req, src.dir, "")
	p, err := copyPrepare(ctx, req)
	if err != nil {
		return err
	}
	in := cache.Inputs{Op: req.op(), Fields: p.Fields(), Files: p.Inputs()}
	return b.prepare(sc, change{inputs: in, createdBy: req.historyText(), onScratch: req.linkLayer(), apply: p.Apply, applyDirect: p.ApplyDirect, close: p.Close})
}

// copyFromLayers prepares a COPY --from a stage, an image or scratch:
// keyed by the source's identity and the instruction (copyInputs); on a
// miss the source is built or unpacked, and its files selected and
// hashed give the content key.
func (b *build) copyFromLayers(ctx context.Context, sc *stepCtx, req copyRequest) error {
	from := sc.step.From
	id, err := b.sourceID(ctx, from)
	if err != nil {
		return err
	}
	in, err := copyInputs(req, id)
	if err != nil {
		return err
	}
	createdBy := req.historyText()
	return b.prepare(sc, change{inputs: in, createdBy: createdBy, onScratch: req.linkLayer(), reads: stageReads(from),
		content: func(ctx context.Context, fn func(change) error) error {
			src, err := b.resolveSource(ctx, from)
			if err != nil {
				return err
			}
			return b.withSource(ctx, src, func(dir *buildcontext.Context, root string) error {
				r := req
				b.readFrom(&r, dir, root)
				p, err := copyPrepare(ctx, r)
				if err != nil {
					return err
				}
				defer p.Close()
				in := cache.Inputs{Op: r.op(), Fields: p.Fields(), Files: p.Inputs()}
				return fn(change{inputs: in, createdBy: createdBy, onScratch: r.linkLayer(), apply: p.Apply, applyDirect: p.ApplyDirect})
			})
		}})
}

// op is the instruction's name in key inputs.
func (req copyRequest) op() string {
	if req.Add {
		return "ADD"
	}
	return "COPY"
}

func allURLs(srcs []string) bool {
	for _, s := range srcs {
		if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") && !isGitURL(s) {
			return false
		}
	}
	return true
}

// stepWarn returns a sink for a step's non-fatal problems: they go to the
// step's output in the progress display.
func (b *build) stepWarn(sc *stepCtx) func(msg string) {
	out := b.stepOutput(sc)
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
