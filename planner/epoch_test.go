package planner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/parser"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

func TestSourceDateEpoch(t *testing.T) {
	remote := time.Unix(1700000601, 0).UTC()
	tests := []struct {
		name      string
		src       string
		buildArgs map[string]*string
		contexts  []NamedContext
		ctxEpoch  *time.Time // the build context's time
		want      string     // epoch seconds, "" for none
		wantArg   string     // SOURCE_DATE_EPOCH as RUN sees it ("-" when unset)
		wantURL   string     // the source ResolveEpoch was asked for
	}{
		{name: "unset", src: "FROM scratch\nARG SOURCE_DATE_EPOCH\nRUN x\n", wantArg: "-"},
		{name: "dockerfile default", src: "ARG SOURCE_DATE_EPOCH=1445412480\nFROM scratch\nARG SOURCE_DATE_EPOCH\nRUN x\n", want: "1445412480", wantArg: "1445412480"},
		{name: "build arg overrides the default", src: "ARG SOURCE_DATE_EPOCH=1700000001\nFROM scratch\nARG SOURCE_DATE_EPOCH\nRUN x\n",
			buildArgs: map[string]*string{"SOURCE_DATE_EPOCH": str("1700000002")}, want: "1700000002", wantArg: "1700000002"},
		{name: "empty build arg unsets the default", src: "ARG SOURCE_DATE_EPOCH=1700000001\nFROM scratch\nARG SOURCE_DATE_EPOCH\nRUN x\n",
			buildArgs: map[string]*string{"SOURCE_DATE_EPOCH": str("")}, wantArg: "-"},
		{name: "context of a local directory has no time", src: "FROM scratch\nARG SOURCE_DATE_EPOCH\nRUN x\n",
			buildArgs: map[string]*string{"SOURCE_DATE_EPOCH": str("context")}, wantArg: "-"},
		{name: "context of a git or HTTP context has its time", src: "FROM scratch\nARG SOURCE_DATE_EPOCH\nRUN x\n",
			buildArgs: map[string]*string{"SOURCE_DATE_EPOCH": str("context")}, ctxEpoch: &remote, want: "1700000601", wantArg: "1700000601"},
		{name: "fetched named context has its time", src: "ARG SOURCE_DATE_EPOCH=src\nFROM scratch\nARG SOURCE_DATE_EPOCH\nRUN x\n",
			contexts: []NamedContext{{Name: "src", Dir: "/ctx", Epoch: &remote}}, want: "1700000601", wantArg: "1700000601"},
		{name: "named context has no time", src: "ARG SOURCE_DATE_EPOCH=src\nFROM scratch\nARG SOURCE_DATE_EPOCH\nRUN x\n",
			contexts: []NamedContext{{Name: "src", Dir: "/ctx"}}, wantArg: "-"},
		{name: "stage with a remote ADD", src: "ARG SOURCE_DATE_EPOCH=mysource\nFROM scratch AS mysource\nARG V=1 SUM\nADD --checksum=sha256:${SUM} http://example.com/src-$V.tar /\nFROM scratch\nARG SOURCE_DATE_EPOCH\nRUN x\n",
			buildArgs: map[string]*string{"SUM": str("abc")}, want: "1700000601", wantArg: "1700000601", wantURL: "http://example.com/src-1.tar sha256:abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked string
			opts := Options{BuildArgs: tt.buildArgs, Contexts: tt.contexts, ContextEpoch: tt.ctxEpoch,
				ResolveEpoch: func(_ context.Context, src EpochSource) (*time.Time, error) {
					asked = src.URL + " " + src.Checksum
					return &remote, nil
				}}
			p, _ := mustPlan(t, tt.src, opts)
			got := ""
			if p.SourceDateEpoch != nil {
				got = fmt.Sprint(p.SourceDateEpoch.Unix())
			}
			if got != tt.want {
				t.Errorf("epoch = %q, want %q", got, tt.want)
			}
			run := p.Target.Steps[len(p.Target.Steps)-1]
			arg := "-"
			for _, a := range run.Args {
				if v, ok := strings.CutPrefix(a, "SOURCE_DATE_EPOCH="); ok {
					arg = v
				}
			}
			if arg != tt.wantArg {
				t.Errorf("RUN sees SOURCE_DATE_EPOCH %q, want %q (args %q)", arg, tt.wantArg, run.Args)
			}
			if asked != tt.wantURL && (asked != "" || tt.wantURL != "") {
				t.Errorf("ResolveEpoch asked for %q, want %q", asked, tt.wantURL)
			}
			if _, ok := run.Cmd.(*instructions.RunCommand); !ok {
				t.Fatalf("last step is %T", run.Cmd)
			}
		})
	}
}

func TestSourceDateEpochErrors(t *testing.T) {
	tests := []struct {
		name, src string
		line      int
		want      string
	}{
		{"invalid default", "ARG SOURCE_DATE_EPOCH=not-a-timestamp\nFROM scratch\nCOPY Dockerfile .\n", 0, "invalid SOURCE_DATE_EPOCH: not-a-timestamp"},
		{"stage with COPY", "ARG SOURCE_DATE_EPOCH=mysource\nFROM scratch AS mysource\nCOPY Dockerfile /Dockerfile\nFROM scratch\n", 2,
			"Dockerfile:2: FROM scratch AS mysource: SOURCE_DATE_EPOCH stage does not meet source-only requirements: unsupported COPY instruction"},
		{"stage not from scratch", "ARG SOURCE_DATE_EPOCH=s\nFROM busybox AS s\nADD http://x/y /\nFROM scratch\n", 2, "SOURCE_DATE_EPOCH stage must use FROM scratch"},
		{"stage without ADD", "ARG SOURCE_DATE_EPOCH=s\nFROM scratch AS s\nARG A\nFROM scratch\n", 2, "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD"},
		{"stage with two ADDs", "ARG SOURCE_DATE_EPOCH=s\nFROM scratch AS s\nADD http://x/y /\nADD http://x/z /\nFROM scratch\n", 2, "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD"},
		{"stage ADD of two sources", "ARG SOURCE_DATE_EPOCH=s\nFROM scratch AS s\nADD http://x/y http://x/z /\nFROM scratch\n", 2, "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD source"},
		{"stage ADD of a local file", "ARG SOURCE_DATE_EPOCH=s\nFROM scratch AS s\nADD file /\nFROM scratch\n", 2, "SOURCE_DATE_EPOCH stage source must be a single HTTP(S) or Git ADD"},
		{"stage ADD of a Git repository", "ARG SOURCE_DATE_EPOCH=s\nFROM scratch AS s\nADD https://github.com/moby/buildkit.git /\nFROM scratch\n", 2, "Git sources are not supported by builder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			df, err := parser.Parse(strings.NewReader(tt.src), "Dockerfile")
			if err != nil {
				t.Fatal(err)
			}
			_, err = New(t.Context(), df, Options{ResolveImage: newFake().resolve})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			var pe *parser.Error
			if line := 0; errors.As(err, &pe) {
				line = pe.Line
				if line != tt.line {
					t.Errorf("line = %d, want %d", line, tt.line)
				}
			} else if tt.line != 0 {
				t.Errorf("error %v has no line, want %d", err, tt.line)
			}
		})
	}
}
