package buildcontext

import (
	"strings"
	"testing"

	"github.com/builder-dev/builder/internal/fuzztest"
)

// TestFuzzSeeds is the generator of testdata/fuzz/FuzzDockerignore:
// .dockerignore files (exceptions, globs, "**", escapes, odd bytes) with
// paths to resolve and glob in fuzzTree. It fails when a seed file is
// missing and rewrites them with
//
//	go test ./internal/buildcontext -run TestFuzzSeeds -update-fuzz-seeds
func TestFuzzSeeds(t *testing.T) {
	paths := strings.Join([]string{"a.txt", "sub/deep/h", "logs/keep.log", "dirlink/g.go", "escape", "*", "sub/*/h", "[", "../../victim/secret"}, "\n")
	var seeds []fuzztest.Seed
	for _, s := range []struct{ name, ignore, paths string }{
		{"empty", "", paths},
		{"comments-and-blanks", "# comment\n\n   \n#!not an exception\n", paths},
		{"exceptions-under-excluded-dir", "logs\n!logs/keep.log\nsub\n!sub/deep\nsub/deep/h\n", paths},
		{"exclude-everything-then-reinclude", "*\n!Dockerfile\n!sub/**/*.go\n!.dockerignore\n", paths},
		{"double-star-forms", "**\n**/\n**/*.tmp\na/**/e.txt\n**/node_modules/**\n", paths},
		{"leading-slash-and-dots", "/a.txt\n./b.txt\n../..gitme\nsub/../sub/f\n/\n.\n", paths},
		{"bang-alone-and-spaces", "!\n  !  a.txt  \n! \n", paths},
		{"bracket-and-escape-syntax", "[\n[a-\n[!a]*\n\\!bang\n\\#hash\nstar\\*name\nback\\\\slash\n[]]\n", paths},
		{"question-marks", "?.txt\n??\nsub/?/h\n", paths},
		{"dir-with-space-and-unicode", "dir with space\nsp ace ü.txt\n", "dir with space/file\nsp ace ü.txt\n"},
		{"crlf-and-bom", "\ufeffa.txt\r\nlogs/\r\n!logs/keep.log\r\n", paths},
		{"nul-and-invalid-utf8", "a\x00b\n\xff\xfe\n*\x00\n", "a\x00b\n\xff"},
		{"symlinks-excluded", "link-in\ndirlink\nloops/a\nescape*\n", "link-in\ndirlink/f\nloops/*\nabsdirlink/deep/h"},
		{"symlink-target-excluded", "ignored.txt\nsub\n", "to-ignored\ndirlink/f\nabsdirlink"},
		{"deep-exceptions", "a\n!a/b\na/b/c\n!a/b/c/d/e.txt\n", "a/b/c/d/e.txt\na/b\na/**"},
		{"dockerfile-and-dockerignore", "Dockerfile\n.dockerignore\n.git\n", "Dockerfile\n.dockerignore\n.git/HEAD"},
		{"bad-pattern-reached-by-a-directory", "*y\n!\\\xe1\n", paths},
		{"many-stars", strings.Repeat("*", 200) + "\n" + strings.Repeat("**/", 50) + "x\n", strings.Repeat("a/", 30) + "x"},
	} {
		seeds = append(seeds, fuzztest.Seed{Name: s.name, Args: []any{[]byte(s.ignore), s.paths, false}},
			fuzztest.Seed{Name: s.name + "-raw", Args: []any{[]byte(s.ignore), s.paths, true}})
	}
	fuzztest.CheckSeeds(t, "FuzzDockerignore", seeds)
}
