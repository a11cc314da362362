package parser

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckFrontend(t *testing.T) {
	tests := []struct {
		name, src, override string
		line                int    // of the error
		want                string // error substring, "" for none
	}{
		{name: "no directive", src: "FROM scratch\n"},
		{name: "docker/dockerfile:1", src: "# syntax=docker/dockerfile:1\nFROM scratch\n"},
		{name: "pinned by digest", src: "# syntax=docker.io/docker/dockerfile:1.7@sha256:" + strings.Repeat("a", 64) + "\nFROM scratch\n"},
		{name: "labs and upstream", src: "# syntax = docker/dockerfile-upstream:master-labs\nFROM scratch\n"},
		{name: "after a shebang", src: "#!/usr/bin/env buildctl\n# syntax=docker/dockerfile:1\nFROM scratch\n"},
		{name: "other frontend", src: "# escape=`\n# syntax=example.com/my/frontend:1 --opt\nFROM scratch\n", line: 2,
			want: "Dockerfile:2: unsupported frontend example.com/my/frontend:1: builder builds with its built-in Dockerfile frontend"},
		{name: "docker/dockerfile on another registry", src: "# syntax=ghcr.io/docker/dockerfile:1\nFROM scratch\n", line: 1, want: "unsupported frontend ghcr.io/docker/dockerfile:1"},
		{name: "BUILDKIT_SYNTAX wins over the directive", src: "# syntax=example.com/x\nFROM scratch\n", override: "docker/dockerfile:1"},
		{name: "BUILDKIT_SYNTAX names another frontend", src: "FROM scratch\n", override: "example.com/x:1 arg",
			want: "Dockerfile: BUILDKIT_SYNTAX: unsupported frontend example.com/x:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			df, err := Parse(strings.NewReader(tt.src), "Dockerfile")
			if err != nil {
				t.Fatal(err)
			}
			err = df.CheckFrontend(tt.override)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckFrontend: %v", err)
				}
				return
			}
			var pe *Error
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want a *Error containing %q", err, tt.want)
			}
			if pe.Line != tt.line {
				t.Errorf("line %d, want %d", pe.Line, tt.line)
			}
		})
	}
}
