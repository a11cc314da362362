package gitsource

import (
	"errors"
	"strings"
	"testing"
)

func bptr(b bool) *bool { return &b }

func TestParse(t *testing.T) {
	cases := []struct {
		in   string
		want Ref
	}{
		{"https://github.com/moby/buildkit.git", Ref{Remote: "https://github.com/moby/buildkit.git", Scheme: "https", Host: "github.com"}},
		{"https://github.com/moby/buildkit.git#v1.0:docs/", Ref{Remote: "https://github.com/moby/buildkit.git", Scheme: "https", Host: "github.com", Ref: "v1.0", SubDir: "docs"}},
		{"https://host/r.git#:sub", Ref{Remote: "https://host/r.git", Scheme: "https", Host: "host", SubDir: "sub"}},
		{"http://127.0.0.1:8080/git/case/repo/.git#refs/heads/main", Ref{Remote: "http://127.0.0.1:8080/git/case/repo/.git", Scheme: "http", Host: "127.0.0.1", Ref: "refs/heads/main"}},
		{"git@github.com:moby/buildkit.git#main", Ref{Remote: "git@github.com:moby/buildkit.git", Scheme: "ssh", Host: "github.com", Ref: "main"}},
		{"ssh://git@host:2222/x/y.git", Ref{Remote: "ssh://git@host:2222/x/y.git", Scheme: "ssh", Host: "host"}},
		{"git://host/x", Ref{Remote: "git://host/x", Scheme: "git", Host: "host"}},
		{"file:///srv/repo#v2:a/b", Ref{Remote: "file:///srv/repo", Scheme: "file", Ref: "v2", SubDir: "a/b"}},
		// Subdirectories never climb out of the repository.
		{"https://h/r.git#main:../../etc", Ref{Remote: "https://h/r.git", Scheme: "https", Host: "h", Ref: "main", SubDir: "etc"}},
		{"https://h/r.git?subdir=/a/../../b/", Ref{Remote: "https://h/r.git", Scheme: "https", Host: "h", SubDir: "b"}},
		// The query form.
		{"https://h/r.git?ref=main", Ref{Remote: "https://h/r.git", Scheme: "https", Host: "h", Ref: "main"}},
		{"https://h/r.git?tag=v1", Ref{Remote: "https://h/r.git", Scheme: "https", Host: "h", Ref: "refs/tags/v1"}},
		{"https://h/r.git?branch=dev", Ref{Remote: "https://h/r.git", Scheme: "https", Host: "h", Ref: "refs/heads/dev"}},
		{"https://h/r.git?tag=v1#refs/tags/v1", Ref{Remote: "https://h/r.git", Scheme: "https", Host: "h", Ref: "refs/tags/v1"}},
		{"https://h/r.git?commit=abc123&ref=main", Ref{Remote: "https://h/r.git", Scheme: "https", Host: "h", Ref: "main", Checksum: "abc123"}},
		{"https://h/r.git?checksum=abc", Ref{Remote: "https://h/r.git", Scheme: "https", Host: "h", Checksum: "abc"}},
		{"https://h/r.git?subdir=sub&ref=feature", Ref{Remote: "https://h/r.git", Scheme: "https", Host: "h", Ref: "feature", SubDir: "sub"}},
		{"https://h/r.git?keep-git-dir&submodules", Ref{Remote: "https://h/r.git", Scheme: "https", Host: "h", KeepGitDir: bptr(true), Submodules: bptr(true)}},
		{"https://h/r.git?keep-git-dir=false&submodules=0", Ref{Remote: "https://h/r.git", Scheme: "https", Host: "h", KeepGitDir: bptr(false), Submodules: bptr(false)}},
		{"git@host:r.git?tag=v1#refs/tags/v1:d", Ref{Remote: "git@host:r.git", Scheme: "ssh", Host: "host", Ref: "refs/tags/v1", SubDir: "d"}},
	}
	for _, c := range cases {
		got, err := Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if got.Remote != c.want.Remote || got.Scheme != c.want.Scheme || got.Host != c.want.Host || got.Ref != c.want.Ref ||
			got.SubDir != c.want.SubDir || got.Checksum != c.want.Checksum || !sameBool(got.KeepGitDir, c.want.KeepGitDir) || !sameBool(got.Submodules, c.want.Submodules) {
			t.Errorf("Parse(%q) = %+v, want %+v", c.in, *got, c.want)
		}
	}
}

func sameBool(a, b *bool) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func TestParseNotGit(t *testing.T) {
	for _, s := range []string{
		"https://example.com/file.tar.gz",
		"https://example.com/repo",
		"http://example.com/x.git.tar",
		".", "./dir", "../x", "dir/sub", "/abs/path", "-",
		"docker-image://alpine", "oci-layout:///x", "ftp://h/r.git",
		"github.com/moby/buildkit", // BuildKit's deprecated form: a local path here
	} {
		if _, err := Parse(s); !errors.Is(err, ErrNotGit) {
			t.Errorf("Parse(%q) = %v, want ErrNotGit", s, err)
		}
		if IsGit(s) {
			t.Errorf("IsGit(%q) = true", s)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := map[string]string{
		"https://h/r.git#--upload-pack=touch /tmp/x": "invalid git ref",
		"https://h/r.git?ref=-oops":                  "invalid git ref",
		"https://h/r.git?tag=v1#refs/heads/master":   "ref conflicts",
		"https://h/r.git?ref=a&ref=b":                "multiple values",
		"https://h/r.git?ref":                        `query "ref" has no value`,
		"https://h/r.git?tag=v1&branch=b":            "branch conflicts with tag",
		"https://h/r.git?keep-git-dir=maybe":         "invalid keep-git-dir value",
		"https://h/r.git?submodules=x":               "invalid submodules value",
		"https://h/r.git?unknown=1":                  `unexpected query "unknown"`,
		"https://h/r.git#:a?subdir=b":                "",
		"https://h/r.git?subdir=b#:a":                "subdir conflicts",
		"git@-oProxy:r.git":                          "invalid host",
		"ssh://-oProxyCommand=x/r.git":               "invalid host",
		"file://host/r":                              "has no host",
	}
	for in, want := range cases {
		_, err := Parse(in)
		if want == "" {
			continue
		}
		if err == nil || errors.Is(err, ErrNotGit) || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", in, err, want)
		}
	}
}

func TestIsCommit(t *testing.T) {
	for s, want := range map[string]bool{
		strings.Repeat("a", 40): true, strings.Repeat("0", 64): true,
		strings.Repeat("a", 39): false, strings.Repeat("A", 40): false,
		"v1.0": false, "": false, strings.Repeat("g", 40): false,
	} {
		if IsCommit(s) != want {
			t.Errorf("IsCommit(%q) = %v", s, !want)
		}
	}
}

func TestMatchRef(t *testing.T) {
	a, b, c := strings.Repeat("a", 40), strings.Repeat("b", 40), strings.Repeat("c", 40)
	out := a + "\trefs/heads/v1\n" + b + "\trefs/tags/v1\n" + c + "\trefs/tags/v1^{}\n" + c + "\trefs/tags/only\n"
	cases := []struct {
		ref, checksum, object, commit, full, err string
	}{
		{ref: "v1", object: a, commit: a, full: "refs/heads/v1"}, // a branch wins over a tag, as git checkout
		{ref: "refs/tags/v1", object: b, commit: c, full: "refs/tags/v1"},
		{ref: "refs/tags/v1", checksum: "ccc", object: b, commit: c, full: "refs/tags/v1"},
		{ref: "only", object: c, commit: c, full: "refs/tags/only"},
		{ref: "nope", err: "repository does not contain ref nope"},
		{ref: "v1", checksum: "bbb", err: "expected checksum to match bbb, got " + a},
	}
	for _, tc := range cases {
		res, err := matchRef(&Ref{Checksum: tc.checksum}, tc.ref, out)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("matchRef(%s) = %v, want %q", tc.ref, err, tc.err)
			}
			continue
		}
		if err != nil || res.Object != tc.object || res.Commit != tc.commit || res.Full != tc.full {
			t.Errorf("matchRef(%s) = %+v, %v; want object %s commit %s", tc.ref, res, err, tc.object, tc.commit)
		}
	}
}

func TestKey(t *testing.T) {
	sha := strings.Repeat("a", 40)
	tagObj := strings.Repeat("b", 40)
	res := &Resolved{Ref: &Ref{}, Name: "v1", Full: "refs/tags/v1", Object: tagObj, Commit: sha}
	if k := res.Key(false); k != sha {
		t.Errorf("Key(false) = %s", k)
	}
	if k := res.Key(true); k != tagObj+".git#refs/tags/v1" {
		t.Errorf("Key(true) = %s", k)
	}
	res.SubDir = "d"
	if k := res.Key(true); k != sha+":d" {
		t.Errorf("Key(true) with subdir = %s", k)
	}
	res.Submodules = bptr(false)
	if k := res.Key(false); k != sha+":d(skip-submodules)" {
		t.Errorf("Key without submodules = %s", k)
	}
}
