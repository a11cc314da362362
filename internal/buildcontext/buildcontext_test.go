package buildcontext

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// makeTree builds, under a fresh temp dir, a victim dir and a context dir;
// spec maps paths to content, "->target" makes a symlink, "/" suffix a dir.
func makeTree(t *testing.T, spec map[string]string) (ctxDir, victim string) {
	t.Helper()
	base := t.TempDir()
	victim = filepath.Join(base, "victim")
	ctxDir = filepath.Join(base, "ctx")
	mustWrite(t, filepath.Join(victim, "secret"), "host secret")
	for p, v := range spec {
		full := filepath.Join(ctxDir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(p, "/"):
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(v, "->"):
			if err := os.Symlink(v[2:], full); err != nil {
				t.Fatal(err)
			}
		default:
			mustWrite(t, full, v)
		}
	}
	return ctxDir, victim
}

func mustWrite(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

var testTree = map[string]string{
	"a.txt":         "a",
	"b.txt":         "b",
	"..gitme":       "dots",
	"sp ace ü.txt":  "unicode",
	"sub/f":         "f",
	"sub/g.go":      "g",
	"sub/deep/h":    "h",
	"empty/":        "",
	"link-in":       "->a.txt",
	"abslink":       "->/a.txt",
	"escape":        "->../victim/secret",
	"escape-abs":    "->/../../victim/secret",
	"dirlink":       "->sub",
	"absdirlink":    "->/sub",
	"ignored.txt":   "ignored",
	"to-ignored":    "->ignored.txt",
	"logs/a.log":    "log",
	"logs/keep.log": "keep",
	"x.tmp":         "tmp",
	"loop1":         "->loop2",
	"loop2":         "->loop1",
}

var testIgnore = []string{"ignored.txt", "logs", "!logs/keep.log", "**/*.tmp", "/nonexistent"}

func TestResolve(t *testing.T) {
	t.Parallel()
	dir, _ := makeTree(t, testTree)
	c, err := Open(dir, testIgnore)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		src, want, wantErr string
	}{
		{src: "a.txt", want: "a.txt"},
		{src: "/a.txt", want: "a.txt"},
		{src: "../a.txt", want: "a.txt"},
		{src: "../../../a.txt", want: "a.txt"},
		{src: "sub/../a.txt", want: "a.txt"},
		{src: "..gitme", want: "..gitme"},
		{src: "sp ace ü.txt", want: "sp ace ü.txt"},
		{src: ".", want: "."},
		{src: "/", want: "."},
		{src: "..", want: "."},
		{src: "link-in", want: "a.txt"},
		{src: "abslink", want: "a.txt"},
		{src: "dirlink/f", want: "sub/f"},
		{src: "absdirlink/deep/h", want: "sub/deep/h"},
		{src: "logs/keep.log", want: "logs/keep.log"},
		{src: "escape", wantErr: `"/escape": not found`},
		{src: "escape-abs", wantErr: `"/escape-abs": not found`},
		{src: "../victim/secret", wantErr: `"/victim/secret": not found`},
		{src: "nosuch", wantErr: `"/nosuch": not found`},
		{src: "a.txt/x", wantErr: `"/a.txt/x": not found`},
		{src: "ignored.txt", wantErr: `"/ignored.txt": not found`},
		{src: "to-ignored", wantErr: `"/to-ignored": not found`},
		{src: "logs/a.log", wantErr: `"/logs/a.log": not found`},
		{src: "x.tmp", wantErr: `"/x.tmp": not found`},
		{src: "loop1", wantErr: "too many"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			got, err := c.Resolve(tt.src)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Resolve(%q) = %q, %v; want error %q", tt.src, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Resolve(%q) = %q, %v; want %q", tt.src, got, err, tt.want)
			}
		})
	}
	if _, err := c.Resolve("nosuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("not-found error %v does not wrap ErrNotFound", err)
	}
}

func TestGlob(t *testing.T) {
	t.Parallel()
	dir, _ := makeTree(t, testTree)
	c, err := Open(dir, testIgnore)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		pattern string
		want    []string
		wantErr string
	}{
		{pattern: "*.txt", want: []string{"a.txt", "b.txt", "sp ace ü.txt"}},
		{pattern: "/sub/*", want: []string{"sub/deep", "sub/f", "sub/g.go"}},
		{pattern: "../*/*.go", want: []string{"absdirlink/g.go", "dirlink/g.go", "sub/g.go"}},
		{pattern: "*/deep/h", want: []string{"absdirlink/deep/h", "dirlink/deep/h", "sub/deep/h"}},
		{pattern: "logs/*", want: []string{"logs/keep.log"}},
		{pattern: "*.tmp"},
		{pattern: "nomatch*"},
		// A matched symlink is followed; one that leads nowhere in the
		// context fails the glob, as BuildKit fails the checksum of such
		// a match: out of the root, to an excluded file, into a loop.
		{pattern: "esc*", wantErr: `"/escape": not found`},
		{pattern: "to-ig*", wantErr: `"/to-ignored": not found`},
		{pattern: "loop*", wantErr: "too many"},
		// A symlink on the way to a match is no match of its own.
		{pattern: "*/deep", want: []string{"absdirlink/deep", "dirlink/deep", "sub/deep"}},
		{pattern: "[", wantErr: "syntax error in pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			got, err := c.Glob(t.Context(), tt.pattern)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Glob(%q) = %v, %v; want error %q", tt.pattern, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Glob(%q) (-want +got):\n%s", tt.pattern, diff)
			}
		})
	}
}

func TestWalk(t *testing.T) {
	t.Parallel()
	dir, _ := makeTree(t, testTree)
	c, err := Open(dir, testIgnore)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := c.Walk(t.Context(), ".")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Rel)
	}
	want := []string{
		"..gitme", "a.txt", "absdirlink", "abslink", "b.txt", "dirlink", "empty", "escape", "escape-abs",
		"link-in", "logs", "logs/keep.log", "loop1", "loop2", "sp ace ü.txt",
		"sub", "sub/deep", "sub/deep/h", "sub/f", "sub/g.go", "to-ignored",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Walk (-want +got):\n%s", diff)
	}
	for _, e := range entries {
		if e.Rel == "escape" && e.Info.Mode()&os.ModeSymlink == 0 {
			t.Errorf("Walk followed symlink escape")
		}
	}
}

func TestExcluded(t *testing.T) {
	t.Parallel()
	c, err := Open(t.TempDir(), []string{"*.log", "!keep.log", "/build", "**/node_modules", "docs/*.md"})
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]bool{
		"a.log": true, "keep.log": false, "build": true, "build/x": true, "src/build": false,
		"node_modules/x": true, "a/b/node_modules": true, "docs/x.md": true, "docs/sub/x.md": false,
		".": false, "/a.log": true, "../a.log": true, "main.go": false,
	}
	for rel, want := range tests {
		got, err := c.Excluded(rel)
		if err != nil || got != want {
			t.Errorf("Excluded(%q) = %v, %v; want %v", rel, got, err, want)
		}
	}
}

func TestReadIgnore(t *testing.T) {
	t.Parallel()
	ctxDir := t.TempDir()
	dfDir := t.TempDir()
	df := filepath.Join(dfDir, "app.Dockerfile")
	mustWrite(t, filepath.Join(ctxDir, ".dockerignore"), "# comment\n\n/secret\n!keep\n./a/../b\n")
	got, err := ReadIgnore(ctxDir, df)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"secret", "!keep", "b"}, got); diff != "" {
		t.Errorf("context .dockerignore (-want +got):\n%s", diff)
	}
	mustWrite(t, df+".dockerignore", "only-this\n")
	got, err = ReadIgnore(ctxDir, df)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"only-this"}, got); diff != "" {
		t.Errorf("Dockerfile-specific ignore (-want +got):\n%s", diff)
	}
	got, err = ReadIgnore(t.TempDir(), "")
	if err != nil || got != nil {
		t.Errorf("no ignore file = %v, %v; want nil, nil", got, err)
	}
	mustWrite(t, filepath.Join(dfDir, "bad", ".dockerignore"), "!\n")
	bad, err := ReadIgnore(filepath.Join(dfDir, "bad"), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctxDir, bad); err == nil || !strings.Contains(err.Error(), "ignore patterns") {
		t.Errorf("malformed pattern %q: error %v should name the ignore patterns", bad, err)
	}
}

func TestOpenFileRefusesExcludedAndSymlink(t *testing.T) {
	t.Parallel()
	dir, _ := makeTree(t, testTree)
	c, err := Open(dir, testIgnore)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open("ignored.txt"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open(ignored.txt) = %v, want ErrNotFound", err)
	}
	if _, err := c.Open("escape"); err == nil {
		t.Error("Open(escape) followed a symlink")
	}
	f, err := c.Open("a.txt")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Open(filepath.Join(dir, "a.txt"), nil); err == nil {
		t.Error("Open of a file as context: want error")
	}
}
