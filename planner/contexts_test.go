package planner

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseContext(t *testing.T) {
	tests := []struct {
		in      string
		want    NamedContext
		wantErr string
	}{
		{in: "src=./dir", want: NamedContext{Name: "src", Dir: "./dir"}},
		{in: "alpine=docker-image://busybox:2", want: NamedContext{Name: "alpine", Image: "busybox:2"}},
		{in: "docker.io/library/alpine:latest=/abs", want: NamedContext{Name: "alpine", Dir: "/abs"}},
		{in: "golang:1.22=docker-image://golang", want: NamedContext{Name: "golang:1.22", Image: "golang"}},
		{in: "reg.example:5000/x/y=d", want: NamedContext{Name: "reg.example:5000/x/y", Dir: "d"}},
		{in: "noequals", wantErr: "want NAME=PATH"},
		{in: "=dir", wantErr: "want NAME=PATH"},
		{in: "Upper=dir", wantErr: "invalid name"},
		{in: "x=https://example.com/repo.git#main:sub", want: NamedContext{Name: "x", URL: "https://example.com/repo.git#main:sub"}},
		{in: "x=https://example.com/src.tar", want: NamedContext{Name: "x", URL: "https://example.com/src.tar"}},
		{in: "x=git@github.com:o/r.git", want: NamedContext{Name: "x", URL: "git@github.com:o/r.git"}},
		{in: "x=oci-layout:///l@sha256:abc", want: NamedContext{Name: "x", Layout: "/l@sha256:abc"}},
		{in: "x=oci-layout://rel:v1", want: NamedContext{Name: "x", Layout: "rel:v1"}},
		{in: "x=docker-image://scratch", want: NamedContext{Name: "x", Image: "scratch"}},
		{in: "x=oci-layout://", wantErr: "needs a directory"},
		{in: "x=target:base", wantErr: "unsupported context source"},
		{in: "x=ftp://h/x", wantErr: "unsupported context source"},
		{in: "x=docker-image://", wantErr: "build context"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseContext(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseContext(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestNamedContexts(t *testing.T) {
	dir := NamedContext{Name: "src", Dir: "/ctx/src"}
	img := func(name, ref string) NamedContext { return NamedContext{Name: name, Image: ref} }
	tests := []struct {
		name     string
		src      string
		contexts []NamedContext
		// check inspects the plan; stage and step lines as in src.
		check   func(t *testing.T, p *Plan, f *fakeResolver)
		wantErr string
	}{
		{
			name:     "FROM image replaced by an image context",
			src:      "FROM alpine\nRUN true\n",
			contexts: []NamedContext{img("alpine", "busybox:2")},
			check: func(t *testing.T, p *Plan, f *fakeResolver) {
				if got := p.Target.Base.Image.Ref; got != "busybox:2" {
					t.Errorf("base = %q, want busybox:2", got)
				}
				if diff := cmp.Diff([]string{"busybox:2 linux/amd64"}, f.calls); diff != "" {
					t.Errorf("resolver calls (-want +got):\n%s", diff)
				}
			},
		},
		{
			name:     "docker-image://scratch is the empty image, not a pull",
			src:      "FROM busybox AS build\nCOPY a /a\nFROM build\n",
			contexts: []NamedContext{img("busybox", "scratch")},
			check: func(t *testing.T, p *Plan, f *fakeResolver) {
				if b := p.Stages[0].Base; !b.Scratch || b.Image != nil {
					t.Errorf("base = %+v, want scratch", b)
				}
				if len(f.calls) != 0 {
					t.Errorf("resolver called: %v", f.calls)
				}
			},
		},
		{
			name:     "a stage replaced by docker-image://scratch",
			src:      "FROM alpine AS base\nRUN make\nFROM base\nCOPY a /a\n",
			contexts: []NamedContext{img("base", "scratch")},
			check: func(t *testing.T, p *Plan, f *fakeResolver) {
				if b := p.Target.Base; !b.Scratch || b.Image != nil {
					t.Errorf("FROM base: %+v, want the empty image", b)
				}
				if len(f.calls) != 0 {
					t.Errorf("resolver called: %v", f.calls)
				}
			},
		},
		{
			name:     "normalized names match",
			src:      "FROM docker.io/library/alpine:latest\n",
			contexts: []NamedContext{img("alpine", "golang")},
			check: func(t *testing.T, p *Plan, _ *fakeResolver) {
				if got := p.Target.Base.Image.Ref; got != "golang" {
					t.Errorf("base = %q, want golang", got)
				}
			},
		},
		{
			name:     "stage replaced by an image context: its steps do not run",
			src:      "FROM golang AS build\nRUN make\nFROM alpine\nCOPY --from=build /a /b\nFROM build\n",
			contexts: []NamedContext{img("build", "busybox")},
			check: func(t *testing.T, p *Plan, f *fakeResolver) {
				if diff := cmp.Diff([]string{"2:"}, stageNames(p)); diff != "" {
					t.Errorf("stages (-want +got):\n%s", diff)
				}
				if got := p.Target.Base.Image; got == nil || got.Ref != "busybox" {
					t.Errorf("FROM build: base = %+v, want the busybox image", got)
				}
				if strings.Contains(strings.Join(f.calls, ","), "golang") {
					t.Errorf("the replaced stage's base was resolved: %v", f.calls)
				}
			},
		},
		{
			name:     "COPY --from a replaced stage reads the image",
			src:      "FROM golang AS build\nRUN make\nFROM alpine\nCOPY --from=build /a /b\nCOPY --from=0 /c /d\n",
			contexts: []NamedContext{img("build", "busybox")},
			check: func(t *testing.T, p *Plan, _ *fakeResolver) {
				for _, line := range []int{4, 5} {
					s := stepByLine(t, p.Target, line)
					if fromOf(s).Stage != nil || fromOf(s).Image == nil || fromOf(s).Image.Ref != "busybox" {
						t.Errorf("line %d: from stage %v image %+v, want the busybox image", line, fromOf(s).Stage, fromOf(s).Image)
					}
				}
				if len(p.Stages) != 1 {
					t.Errorf("planned %d stages, want only the target", len(p.Stages))
				}
			},
		},
		{
			name:     "COPY --from and RUN --mount from= a directory context",
			src:      "FROM alpine\nCOPY --from=src a /a\nRUN --mount=from=src,target=/s true\n",
			contexts: []NamedContext{dir},
			check: func(t *testing.T, p *Plan, _ *fakeResolver) {
				cp := stepByLine(t, p.Target, 2)
				if fromOf(cp).Context == nil || fromOf(cp).Context.Dir != "/ctx/src" || fromOf(cp).Image != nil || fromOf(cp).Stage != nil {
					t.Errorf("COPY: from context %+v image %+v stage %v, want the directory", fromOf(cp).Context, fromOf(cp).Image, fromOf(cp).Stage)
				}
				run := stepByLine(t, p.Target, 3)
				if b := run.MountFrom["src"]; b.Context == nil || b.Context.Dir != "/ctx/src" {
					t.Errorf("RUN --mount from=src: %+v, want the directory", b)
				}
			},
		},
		{
			name:     "a directory context replaces a stage for COPY --from",
			src:      "FROM golang AS src\nRUN make\nFROM alpine\nCOPY --from=src a /a\n",
			contexts: []NamedContext{dir},
			check: func(t *testing.T, p *Plan, _ *fakeResolver) {
				if s := stepByLine(t, p.Target, 4); fromOf(s).Context == nil {
					t.Errorf("COPY --from=src does not read the directory: %+v", s)
				}
			},
		},
		{
			name:     "unrelated contexts change nothing",
			src:      "FROM alpine AS a\nFROM a\nCOPY --from=a /x /y\n",
			contexts: []NamedContext{dir, img("other", "golang")},
			check: func(t *testing.T, p *Plan, _ *fakeResolver) {
				if s := stepByLine(t, p.Target, 3); fromOf(s).Stage == nil || fromOf(s).Context != nil {
					t.Errorf("COPY --from=a: %+v, want the stage", s)
				}
			},
		},
		{
			name:     "FROM a directory context",
			src:      "FROM src\nRUN true\n",
			contexts: []NamedContext{dir},
			check: func(t *testing.T, p *Plan, f *fakeResolver) {
				if b := p.Target.Base; b.Context == nil || b.Context.Dir != "/ctx/src" || p.Target.Replaced || len(p.Target.Steps) != 1 || len(f.calls) != 0 {
					t.Errorf("target base %+v replaced %v with %d steps, %d image resolves; want the directory, its RUN, no resolve", b, p.Target.Replaced, len(p.Target.Steps), len(f.calls))
				}
			},
		},
		{
			name:     "target replaced by a directory",
			src:      "FROM alpine AS src\nRUN true\n",
			contexts: []NamedContext{dir},
			check: func(t *testing.T, p *Plan, f *fakeResolver) {
				if b := p.Target.Base; b.Context == nil || !p.Target.Replaced || len(p.Target.Steps) != 0 || len(f.calls) != 0 {
					t.Errorf("target base %+v replaced %v with %d steps, %d image resolves; want the directory and nothing else", b, p.Target.Replaced, len(p.Target.Steps), len(f.calls))
				}
			},
		},
		{
			name:     "FROM a stage a directory replaced",
			src:      "FROM alpine AS src\nRUN true\nFROM src\nRUN true\n",
			contexts: []NamedContext{dir},
			check: func(t *testing.T, p *Plan, _ *fakeResolver) {
				if b := p.Target.Base; b.Stage == nil || b.Stage.Base.Context == nil || !b.Stage.Replaced {
					t.Errorf("target base %+v, want stage src replaced by the directory", b)
				}
			},
		},
		{name: "missing context image", src: "FROM alpine\n", contexts: []NamedContext{img("alpine", "nosuch")}, wantErr: "resolve image nosuch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, f, err := plan(t, tt.src, Options{Contexts: tt.contexts})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New() error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, p, f)
		})
	}
}
