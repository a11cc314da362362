package planner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/fuzztest"
	"github.com/builder-dev/builder/parser"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fuzzResolver serves a few images: "onbuild" carries the fuzzed ONBUILD
// triggers, "failing" and unknown references fail like a registry would.
type fuzzResolver struct {
	mu      sync.Mutex
	onbuild []string
}

func (r *fuzzResolver) resolve(ctx context.Context, ref string, p v1.Platform) (*ImageInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var cfg v1.Config
	switch ref {
	case "busybox", "busybox:latest", "alpine", "golang:1.22":
		cfg.Env = []string{"PATH=/usr/bin:/bin", "HOME=/root"}
	case "noenv":
	case "onbuild":
		cfg.Env = []string{"A=from-image"}
		cfg.OnBuild = r.onbuild
	case "windows":
		p.OS = "windows"
	default:
		return nil, fmt.Errorf("pull access denied for %s", ref)
	}
	return &ImageInfo{Ref: ref, Digest: "sha256:" + strings.Repeat("b", 64), Config: &v1.ConfigFile{OS: p.OS, Architecture: p.Architecture, Config: cfg}}, nil
}

// fuzzOptions turns the fuzzed option lines into Options: "K=V" and "K"
// are --build-arg values (K alone: unset), "@NAME=VALUE" a --build-context,
// "%OS/ARCH" the --platform, "#PATTERN" a .dockerignore pattern and "!all"
// plans every stage (as a check without --target).
func fuzzOptions(target, lines string, resolve func(context.Context, string, v1.Platform) (*ImageInfo, error)) (Options, bool) {
	opts := Options{Target: target, BuildArgs: map[string]*string{}, ResolveImage: resolve, BuildPlatform: amd64}
	for _, line := range strings.Split(lines, "\n") {
		switch {
		case line == "":
		case line == "!all":
			opts.AllStages = target == ""
		case strings.HasPrefix(line, "#"):
			opts.IgnorePatterns = append(opts.IgnorePatterns, line[1:])
		case strings.HasPrefix(line, "@"):
			nc, err := ParseContext(line[1:])
			if err != nil {
				return opts, false // the CLI refuses it before planning
			}
			opts.Contexts = append(opts.Contexts, nc)
		case strings.HasPrefix(line, "%"):
			p, err := v1.ParsePlatform(line[1:])
			if err != nil {
				return opts, false
			}
			opts.Platform = *p
		default:
			if k, v, ok := strings.Cut(line, "="); ok {
				opts.BuildArgs[k] = &v
			} else {
				opts.BuildArgs[line] = nil
			}
		}
	}
	return opts, true
}

// FuzzPlan parses a fuzzed Dockerfile and plans it with fuzzed --target,
// build args, named contexts, platform and base-image ONBUILD triggers,
// through the pure API with a fake resolver. It checks: no panic; errors
// are *parser.Error (or the context's); bounded time and allocation; on
// success, the plan is well formed (target last and named as asked,
// stages in dependency order, every stage reference points to an earlier
// planned stage, lines in range, unique arg keys,
// UnusedBuildArgs sorted and given), the build args are not modified, and
// planning the same Dockerfile again gives the same plan (the parsed
// Dockerfile is not changed by expansion). Seeds: the parser's test
// Dockerfiles and testdata/fuzz/FuzzPlan (see TestFuzzSeeds).
func FuzzPlan(f *testing.F) {
	files, err := filepath.Glob("../parser/testdata/*/Dockerfile")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "", "TAG=1", "")
	}
	bounds := fuzztest.Bounds{Timeout: 5 * time.Second, Grace: 3 * time.Second, MaxAlloc: 512 << 20}
	f.Fuzz(func(t *testing.T, dockerfile []byte, target, options, onbuild string) {
		df, err := parser.Parse(bytes.NewReader(dockerfile), "Dockerfile")
		if err != nil {
			return // FuzzParse covers parse errors
		}
		r := &fuzzResolver{onbuild: strings.Split(onbuild, "\n")}
		if onbuild == "" {
			r.onbuild = nil
		}
		opts, ok := fuzzOptions(target, options, r.resolve)
		if !ok {
			return
		}
		args := maps.Clone(opts.BuildArgs)
		fuzztest.Run(t, bounds, func(ctx context.Context) {
			lint := newFuzzLint(t)
			opts.Lint = lint.Linter()
			p, err := New(ctx, df, opts)
			checkLint(t, df, lint)
			if err != nil {
				var pe *parser.Error
				if !errors.As(err, &pe) && ctx.Err() == nil {
					t.Fatalf("error %T is not a *parser.Error: %v", err, err)
				}
				return
			}
			checkPlan(t, df, opts, p)
			if !maps.EqualFunc(args, opts.BuildArgs, func(a, b *string) bool { return a == b && (a == nil || *a == *b) }) {
				t.Fatalf("build args changed: %v", opts.BuildArgs)
			}
			lint2 := newFuzzLint(t)
			opts.Lint = lint2.Linter()
			again, err := New(ctx, df, opts)
			if err != nil {
				if ctx.Err() == nil {
					t.Fatalf("second plan of the same Dockerfile failed: %v", err)
				}
				return
			}
			if a, b := renderPlan(p), renderPlan(again); a != b {
				t.Fatalf("planning twice gave different plans:\n%s\n---\n%s", a, b)
			}
			if a, b := fmt.Sprint(lint.Warnings()), fmt.Sprint(lint2.Warnings()); a != b {
				t.Fatalf("planning twice gave different lint warnings:\n%s\n---\n%s", a, b)
			}
		})
	})
}

func newFuzzLint(t *testing.T) *parser.Lint {
	lint, err := parser.NewLint("experimental=all")
	if err != nil {
		t.Fatal(err)
	}
	return lint
}

// checkLint checks the lint warnings of a plan, successful or not: each
// has a rule, a message and lines of the Dockerfile.
func checkLint(t *testing.T, df *parser.Dockerfile, lint *parser.Lint) {
	t.Helper()
	for _, w := range lint.Warnings() {
		line, end := parser.Span(w.Location)
		if w.Rule == "" || w.Message == "" || line < 1 || end > len(df.Lines) || w.Line != line {
			t.Fatalf("lint warning %+v: lines %d-%d of %d", w, line, end, len(df.Lines))
		}
	}
}

// checkPlan checks the structure of a successful plan.
func checkPlan(t *testing.T, df *parser.Dockerfile, opts Options, p *Plan) {
	t.Helper()
	if len(p.Stages) == 0 || p.Target != p.Stages[len(p.Stages)-1] {
		t.Fatalf("target is not the last of %d stages", len(p.Stages))
	}
	if opts.Target != "" && !strings.EqualFold(p.Target.Name, opts.Target) {
		t.Fatalf("target stage %q, want %q", p.Target.Name, opts.Target)
	}
	planned := map[*Stage]int{} // stage → position in p.Stages
	byIndex := map[int]*Stage{}
	earlier := func(s *Stage, pos int, what string) {
		if q, ok := planned[s]; !ok || q >= pos {
			t.Fatalf("stage %d: %s is not an earlier planned stage", p.Stages[pos].Index, what)
		}
	}
	for pos, st := range p.Stages {
		if st.Index < 0 || st.Index >= len(df.Stages) || byIndex[st.Index] != nil {
			t.Fatalf("stage index %d: out of range or planned twice", st.Index)
		}
		byIndex[st.Index] = st
		if st.Base.Stage != nil {
			earlier(st.Base.Stage, pos, "base")
		}
		for _, d := range st.DependsOn {
			if byIndex[d] == nil || d == st.Index {
				t.Fatalf("stage %d depends on %d, which is not planned before it", st.Index, d)
			}
		}
		if len(st.Steps) < len(df.Stages[st.Index].Commands) {
			t.Fatalf("stage %d has %d steps for %d commands", st.Index, len(st.Steps), len(df.Stages[st.Index].Commands))
		}
		for _, s := range st.Steps {
			checkStep(t, df, st, s)
			if fromOf(s).Stage != nil {
				earlier(fromOf(s).Stage, pos, "COPY --from")
			}
			for from, b := range s.MountFrom {
				if b.Stage != nil {
					earlier(b.Stage, pos, "mount from="+from)
				}
			}
		}
		planned[st] = pos
	}
	if !slices.IsSorted(p.UnusedBuildArgs) {
		t.Fatalf("UnusedBuildArgs not sorted: %q", p.UnusedBuildArgs)
	}
	for _, k := range p.UnusedBuildArgs {
		if opts.BuildArgs[k] == nil {
			t.Fatalf("unused build arg %q was not given", k)
		}
	}
}

func checkStep(t *testing.T, df *parser.Dockerfile, st *Stage, s *Step) {
	t.Helper()
	if s.Cmd == nil || s.Line < 1 || s.EndLine < s.Line || s.EndLine > len(df.Lines) {
		t.Fatalf("stage %d: step %q has lines %d-%d of %d, command %v", st.Index, s.Text, s.Line, s.EndLine, len(df.Lines), s.Cmd)
	}
	keys := map[string]bool{}
	for _, a := range s.Args {
		k, _, _ := strings.Cut(a, "=")
		if keys[k] {
			t.Fatalf("line %d: arg %s twice in %q", s.Line, k, s.Args)
		}
		keys[k] = true
	}
}

// renderPlan is a deterministic text form of a plan.
func renderPlan(p *Plan) string {
	var b strings.Builder
	for _, st := range p.Stages {
		base := "scratch"
		switch {
		case st.Base.Stage != nil:
			base = fmt.Sprintf("stage %d", st.Base.Stage.Index)
		case st.Base.Image != nil:
			base = "image " + st.Base.Image.Ref
		case st.Base.Context != nil:
			base = "context " + st.Base.Context.Name
		}
		fmt.Fprintf(&b, "stage %d %q %s %s deps %v\n", st.Index, st.Name, base, FormatPlatform(st.Platform), st.DependsOn)
		for _, s := range st.Steps {
			cmd := renderCmd(s)
			fmt.Fprintf(&b, "  %d-%d %q onbuild=%v %s env=%q args=%q\n", s.Line, s.EndLine, s.Text, s.OnBuild, cmd, s.Env, s.Args)
		}
	}
	fmt.Fprintf(&b, "unused %q\n", p.UnusedBuildArgs)
	return b.String()
}

// renderCmd is the JSON form of a step's expanded command without
// FlagsUsed, which buildkit fills from a map (in random order) and
// builder never reads.
func renderCmd(s *Step) string {
	raw, err := json.Marshal(s.Cmd)
	var m map[string]any
	if err == nil {
		err = json.Unmarshal(raw, &m)
	}
	if err != nil {
		return expanded(s)
	}
	delete(m, "FlagsUsed")
	out, _ := json.Marshal(m) // map keys sorted
	return string(out)
}
