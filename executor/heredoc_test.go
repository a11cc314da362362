package executor

import (
	"testing"

	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/google/go-cmp/cmp"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// TestHeredocScript follows BuildKit's dispatchRun: a single heredoc whose
// body starts with "#!" runs as /dev/pipes/<name> through the shell; every
// other heredoc runs its text in the shell.
func TestHeredocScript(t *testing.T) {
	tests := []struct {
		line   string
		shell  []string
		argv   []string
		script *sandbox.File
	}{
		{line: "RUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF",
			argv:   []string{"/bin/sh", "-c", "/dev/pipes/EOF"},
			script: &sandbox.File{Target: "/dev/pipes/EOF", Data: []byte("#!/usr/bin/env python3\nprint(1)\n"), Mode: 0o755}},
		{line: "RUN <<-SCRIPT\n\t#!/bin/sh\n\techo hi\n\tSCRIPT", shell: []string{"/bin/ash", "-c"},
			argv:   []string{"/bin/ash", "-c", "/dev/pipes/SCRIPT"},
			script: &sandbox.File{Target: "/dev/pipes/SCRIPT", Data: []byte("#!/bin/sh\necho hi\n"), Mode: 0o755}},
		{line: "RUN <<EOF\necho '#!not first'\nEOF", argv: []string{"/bin/sh", "-c", "echo '#!not first'\n"}},
		{line: "RUN python3 <<EOF\n#!/usr/bin/env python3\nEOF", argv: []string{"/bin/sh", "-c", "python3 <<EOF\n#!/usr/bin/env python3\nEOF"}},
		{line: "RUN echo '#!/bin/sh'", argv: []string{"/bin/sh", "-c", "echo '#!/bin/sh'"}},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			c := parseCmd(t, tt.line).(*instructions.RunCommand)
			argv, err := runArgv(&tt.shell, c)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.argv, argv); diff != "" {
				t.Errorf("argv (-want +got):\n%s", diff)
			}
			script, err := heredocScript(c)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.script, script); diff != "" {
				t.Errorf("script (-want +got):\n%s", diff)
			}
		})
	}
}
