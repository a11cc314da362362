package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/parser"
	"github.com/builder-dev/builder/planner"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// buildRequest records what the build was asked to do, for `builder
// builds inspect` and for `builder verify` to run it again. Secret values
// are never part of it: only the --secret specs (id and source).
func buildRequest(f *buildFlags, contextDir, dfFile string, df *parser.Dockerfile, platforms []v1.Platform, epoch *time.Time, plan *planner.Plan) *cache.BuildRequest {
	absCtx, _ := filepath.Abs(contextDir)
	r := &cache.BuildRequest{
		ContextDir:    absCtx,
		Dockerfile:    dfFile,
		Target:        f.target,
		Platforms:     formatPlatforms(platforms),
		BuildArgs:     resolvedArgs(f.buildArgs),
		Labels:        slices.Clone(f.labels),
		Secrets:       slices.Clone(f.secrets),
		BuildContexts: absContexts(f.buildContexts),
		Network:       f.network,
		Allow:         slices.Clone(f.allow),
		GitCommit:     gitCommit(absCtx),
	}
	if dfFile != "-" {
		r.Dockerfile, _ = filepath.Abs(dfFile)
	}
	if df != nil {
		r.DockerfileText = strings.Join(df.Lines, "\n") + "\n"
		sum := sha256.Sum256([]byte(r.DockerfileText))
		r.DockerfileDigest = "sha256:" + hex.EncodeToString(sum[:])
	}
	if epoch != nil {
		n := epoch.Unix()
		r.SourceDateEpoch = &n
	}
	r.BaseImages = planImages(plan)
	return r
}

// resolvedArgs returns the build args as K=V, a bare K taking its value
// from the environment as the build did (and left out when unset).
func resolvedArgs(vals []string) []string {
	var out []string
	for _, v := range vals {
		if strings.Contains(v, "=") {
			out = append(out, v)
		} else if env, ok := os.LookupEnv(v); ok {
			out = append(out, v+"="+env)
		}
	}
	return out
}

// absContexts makes the directories of NAME=DIR build contexts absolute,
// so the record names them wherever it is read.
func absContexts(vals []string) []string {
	out := make([]string, 0, len(vals))
	for _, v := range vals {
		name, val, ok := strings.Cut(v, "=")
		if ok && !strings.Contains(val, "://") {
			if abs, err := filepath.Abs(val); err == nil {
				v = name + "=" + abs
			}
		}
		out = append(out, v)
	}
	return out
}

// planImages lists the images the plan reads: stage bases, COPY --from
// and RUN --mount from= images, each once.
func planImages(plan *planner.Plan) []cache.ImageRef {
	if plan == nil {
		return nil
	}
	var out []cache.ImageRef
	seen := map[cache.ImageRef]bool{}
	add := func(ii *planner.ImageInfo) {
		if ii == nil {
			return
		}
		r := cache.ImageRef{Ref: ii.Ref, Digest: ii.Digest}
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	for _, st := range plan.Stages {
		add(st.Base.Image)
		for _, step := range st.Steps {
			if step.From != nil {
				add(step.From.Image)
			}
			for _, k := range slices.Sorted(maps.Keys(step.MountFrom)) {
				add(step.MountFrom[k].Image)
			}
		}
	}
	return out
}

// gitCommit returns the commit checked out in the git repository holding
// dir, or "" when there is none (or git is not installed).
func gitCommit(dir string) string {
	if !inGitRepo(dir) {
		return ""
	}
	out, err := exec.Command("git", "-C", dir, "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// inGitRepo reports whether dir or a parent holds .git (cheaper than
// asking git for every build).
func inGitRepo(dir string) bool {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(filepath.Join(d, ".git")); err == nil {
			return true
		}
		if filepath.Dir(d) == d {
			return false
		}
	}
}

// finishBuild completes the build record when the build ends, whatever
// the outcome, and stores it with the build's log.
func finishBuild(ctx context.Context, st *stores, rec *cache.BuildRecord, log *logBuffer, buildErr error) error {
	rec.Finished = time.Now().UTC()
	switch {
	case buildErr == nil:
		rec.Status = cache.BuildCompleted
	case ctx.Err() != nil || errors.Is(buildErr, context.Canceled):
		rec.Status, rec.Error = cache.BuildCanceled, buildErr.Error()
	default:
		rec.Status, rec.Error = cache.BuildFailed, buildErr.Error()
	}
	ctx = context.WithoutCancel(ctx)
	if err := st.cache.PutBuild(ctx, rec); err != nil {
		return err
	}
	if log == nil {
		return nil
	}
	if buildErr != nil {
		fmt.Fprintf(log, "ERROR: %v\n", buildErr)
	}
	return st.cache.PutBuildLog(ctx, rec.ID, log.Bytes())
}

// logBuffer holds a build's log in memory up to a bound: past it, the
// first logHead bytes and the last logTail bytes are kept, with a line
// saying how much was left out between them.
type logBuffer struct {
	mu      sync.Mutex
	head    []byte
	tail    []byte
	dropped int64
}

const (
	logHead = 1 << 20
	logTail = 3 << 20
)

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(b)
	if room := logHead - len(l.head); room > 0 {
		k := min(room, len(b))
		l.head = append(l.head, b[:k]...)
		b = b[k:]
	}
	l.tail = append(l.tail, b...)
	if len(l.tail) > 2*logTail {
		cut := len(l.tail) - logTail
		l.dropped += int64(cut)
		l.tail = append(l.tail[:0:0], l.tail[cut:]...)
	}
	return n, nil
}

// Bytes returns the log as kept.
func (l *logBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	tail, dropped := l.tail, l.dropped
	if len(tail) > logTail {
		dropped += int64(len(tail) - logTail)
		tail = tail[len(tail)-logTail:]
	}
	out := slices.Clone(l.head)
	if dropped > 0 {
		out = fmt.Appendf(out, "\n[... %d bytes of log left out ...]\n", dropped)
	}
	return append(out, tail...)
}

// formatPlatforms are platforms as os/arch[/variant], in order.
func formatPlatforms(ps []v1.Platform) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = planner.FormatPlatform(p)
	}
	return out
}
