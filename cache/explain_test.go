package cache

import (
	"strings"
	"testing"
)

func TestExplain(t *testing.T) {
	f := func(kv ...string) []Field {
		var out []Field
		for i := 0; i < len(kv); i += 2 {
			out = append(out, Field{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	file := func(p, digest string, mode uint32) FileInput {
		return FileInput{Path: p, Type: "file", Mode: mode, Digest: digest}
	}
	base := []FileInput{file("src/main.go", "sha256:1", 0o644), file("run.sh", "sha256:2", 0o644), file("a.txt", "sha256:3", 0o644)}
	aaaa, bbbb := "sha256:aaaa"+strings.Repeat("0", 60), "sha256:bbbb"+strings.Repeat("1", 60)
	tests := []struct {
		name      string
		prev, cur *Inputs
		want      string
	}{
		{"equal", &Inputs{Op: "RUN", Fields: f("instruction", "RUN make")}, &Inputs{Op: "RUN", Fields: f("instruction", "RUN make")}, ""},
		{"no previous", nil, &Inputs{Op: "RUN"}, "no earlier build of this step"},
		{"step removed", &Inputs{Op: "RUN"}, nil, "step removed"},
		{"instruction", &Inputs{Op: "RUN", Fields: f("instruction", "RUN make")}, &Inputs{Op: "RUN", Fields: f("instruction", "RUN make all")}, "instruction changed"},
		{"op", &Inputs{Op: "RUN", Fields: f("instruction", "RUN x")}, &Inputs{Op: "COPY", Fields: f("instruction", "COPY x y")}, "instruction changed"},
		{"arg", &Inputs{Op: "RUN", Fields: f("arg.VERSION", "1.2")}, &Inputs{Op: "RUN", Fields: f("arg.VERSION", "1.3")}, "build arg VERSION changed (1.2 → 1.3)"},
		{"arg added", &Inputs{Op: "RUN"}, &Inputs{Op: "RUN", Fields: f("arg.VERSION", "1.3")}, "build arg VERSION changed (unset → 1.3)"},
		{"env", &Inputs{Op: "RUN", Fields: f("env.FOO", "a")}, &Inputs{Op: "RUN", Fields: f("env.FOO", "b")}, "env FOO changed (a → b)"},
		{"env long value clipped", &Inputs{Op: "RUN", Fields: f("env.FOO", "a")}, &Inputs{Op: "RUN", Fields: f("env.FOO", strings.Repeat("x", 50))}, "env FOO changed (a → " + strings.Repeat("x", 39) + "…)"},
		{"base", &Inputs{Op: "FROM", Fields: f("base.digest", aaaa)}, &Inputs{Op: "FROM", Fields: f("base.digest", bbbb)}, "base image changed (sha256:aaaa00000000 → sha256:bbbb11111111)"},
		{"other field", &Inputs{Op: "RUN", Fields: f("user", "root")}, &Inputs{Op: "RUN", Fields: f("user", "app")}, "user changed"},
		{"repeated field order", &Inputs{Op: "RUN", Fields: f("mount", "a", "mount", "b")}, &Inputs{Op: "RUN", Fields: f("mount", "b", "mount", "a")}, "mount changed"},
		{"content", &Inputs{Op: "COPY", Files: base}, &Inputs{Op: "COPY", Files: []FileInput{file("src/main.go", "sha256:9", 0o644), base[1], base[2]}}, "src/main.go content changed"},
		{"added under dir", &Inputs{Op: "COPY", Files: base}, &Inputs{Op: "COPY", Files: append(append([]FileInput(nil), base...), file("src/x/a.go", "sha256:a", 0o644), file("src/b.go", "sha256:b", 0o644), file("src/c.go", "sha256:c", 0o644))}, "3 files added under src/"},
		{"added spread", &Inputs{Op: "COPY"}, &Inputs{Op: "COPY", Files: []FileInput{file("a", "sha256:a", 0o644), file("b/c", "sha256:b", 0o644)}}, "2 files added"},
		{"removed", &Inputs{Op: "COPY", Files: base}, &Inputs{Op: "COPY", Files: base[:2]}, "a.txt removed"},
		{"mode", &Inputs{Op: "COPY", Files: base}, &Inputs{Op: "COPY", Files: []FileInput{base[0], file("run.sh", "sha256:2", 0o755), base[2]}}, "mode of run.sh changed (0644 → 0755)"},
		{"type", &Inputs{Op: "COPY", Files: []FileInput{file("x", "sha256:1", 0o644)}}, &Inputs{Op: "COPY", Files: []FileInput{{Path: "x", Type: "symlink", Mode: 0o777, Link: "y"}}}, "x changed from file to symlink"},
		{"link", &Inputs{Op: "COPY", Files: []FileInput{{Path: "l", Type: "symlink", Link: "a"}}}, &Inputs{Op: "COPY", Files: []FileInput{{Path: "l", Type: "symlink", Link: "b"}}}, "link target of l changed (a → b)"},
		// COPY's sources are numbered in its inputs; reasons show the
		// paths as written.
		{"numbered source", &Inputs{Op: "COPY", Files: []FileInput{file("0/store.go", "sha256:1", 0o644), file("1/lib/a.go", "sha256:2", 0o644)}},
			&Inputs{Op: "COPY", Files: []FileInput{file("0/store.go", "sha256:9", 0o644), file("1/lib/a.go", "sha256:2", 0o644), file("1/lib/b.go", "sha256:3", 0o644)}},
			"store.go content changed; lib/b.go added"},
		{"several, ordered", &Inputs{Op: "RUN", Fields: f("env.FOO", "a", "arg.V", "1", "instruction", "RUN x")}, &Inputs{Op: "RUN", Fields: f("env.FOO", "b", "arg.V", "2", "instruction", "RUN x")}, "build arg V changed (1 → 2); env FOO changed (a → b)"},
		// A step reading another stage or image is keyed by its identity.
		{"source stage", &Inputs{Op: "COPY", Fields: f("from", "stage build@"+aaaa)}, &Inputs{Op: "COPY", Fields: f("from", "stage build@"+bbbb)}, "stage build changed"},
		{"mount source", &Inputs{Op: "RUN", Fields: f("mount.1.from", "image alpine@"+aaaa)}, &Inputs{Op: "RUN", Fields: f("mount.1.from", "image alpine@"+bbbb)}, "image alpine changed"},
		{"other source", &Inputs{Op: "COPY", Fields: f("from", "stage a@"+aaaa)}, &Inputs{Op: "COPY", Fields: f("from", "stage b@"+aaaa)}, "source changed (stage a → stage b)"},
		{"more than three", &Inputs{Op: "RUN", Fields: f("a", "1", "b", "1", "c", "1", "d", "1", "e", "1")}, &Inputs{Op: "RUN", Fields: f("a", "2", "b", "2", "c", "2", "d", "2", "e", "2")}, "a changed; b changed; c changed; and 2 more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Explain(tt.prev, tt.cur); got != tt.want {
				t.Errorf("Explain = %q\n want %q", got, tt.want)
			}
		})
	}
}
