package gitsource

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// repo makes a repository in a temp dir by running each command with sh,
// and returns its file:// URL and a function running git in it.
func repo(t *testing.T, format string, cmds ...string) (string, func(args ...string) string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git binary")
	}
	dir := t.TempDir()
	env := append(os.Environ(), "HOME="+dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@x",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@x", "GIT_COMMITTER_DATE=2023-11-14T22:13:20Z", "GIT_AUTHOR_DATE=2023-11-14T22:13:20Z")
	sh := func(c string) string {
		cmd := exec.Command("sh", "-c", c)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", c, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	sh("git -c init.defaultBranch=master init -q --object-format=" + format)
	for _, c := range cmds {
		sh(c)
	}
	return "file://" + dir, func(args ...string) string { return sh("git " + strings.Join(args, " ")) }
}

func fetch(t *testing.T, src string, opts Options) (string, *Resolved, *Checkout, error) {
	t.Helper()
	r, err := Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Resolve(context.Background(), r, opts)
	if err != nil {
		return "", nil, nil, err
	}
	dest := t.TempDir()
	opts.TempDir = t.TempDir()
	co, err := res.Fetch(context.Background(), dest, opts)
	return dest, res, co, err
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFetch(t *testing.T) {
	for _, format := range []string{"sha1", "sha256"} {
		t.Run(format, func(t *testing.T) {
			url, git := repo(t, format,
				"echo one > foo && mkdir -p sub/d && echo s > sub/d/f && git add . && git commit -qm one && git tag v1 && git tag -a -m ann v1a",
				"echo two > foo && git commit -qam two && git branch dev",
				"echo three > foo && git commit -qam three",
			)
			v1, dev := git("rev-parse", "v1"), git("rev-parse", "dev")
			for _, c := range []struct{ src, foo, commit string }{
				{url, "three\n", git("rev-parse", "HEAD")},
				{url + "#v1", "one\n", v1},
				{url + "#v1a", "one\n", v1},
				{url + "?tag=v1a", "one\n", v1},
				{url + "?branch=dev", "two\n", dev},
				{url + "#" + dev, "two\n", dev},
				{url + "?ref=" + dev + "&commit=" + dev, "two\n", dev},
				{url + "?commit=" + dev[:8] + "&ref=dev", "two\n", dev},
			} {
				dir, res, co, err := fetch(t, c.src, Options{})
				if err != nil {
					t.Fatalf("%s: %v", c.src, err)
				}
				if got := read(t, filepath.Join(dir, "foo")); got != c.foo {
					t.Errorf("%s: foo = %q, want %q", c.src, got, c.foo)
				}
				if res.Commit != c.commit {
					t.Errorf("%s: commit %s, want %s", c.src, res.Commit, c.commit)
				}
				if _, err := os.Lstat(filepath.Join(dir, ".git")); !os.IsNotExist(err) {
					t.Errorf("%s: .git kept without KeepGitDir (%v)", c.src, err)
				}
				if want := time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC); !co.CommitTime.Equal(want) {
					t.Errorf("%s: commit time %s", c.src, co.CommitTime)
				}
			}
		})
	}
}

func TestFetchKeepGitDir(t *testing.T) {
	url, git := repo(t, "sha1", "echo one > foo && git add foo && git commit -qm one && git tag v1")
	var out bytes.Buffer
	dir, _, _, err := fetch(t, url+"#v1", Options{KeepGitDir: true, Output: &out})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := read(t, filepath.Join(dir, ".git/HEAD")), git("rev-parse", "v1")+"\n"; got != want {
		t.Errorf(".git/HEAD = %q, want %q (detached at the commit)", got, want)
	}
	if strings.Contains(out.String(), "detached HEAD") {
		t.Errorf("advice shown without Advice:\n%s", out.String())
	}
	if cfg := read(t, filepath.Join(dir, ".git/config")); !strings.Contains(cfg, "url = "+url) {
		t.Errorf("origin is not the remote:\n%s", cfg)
	}
	out.Reset()
	if _, _, _, err := fetch(t, url+"#v1", Options{KeepGitDir: true, Advice: true, Output: &out}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "detached HEAD") {
		t.Errorf("no detached-HEAD advice with Advice:\n%s", out.String())
	}
}

func TestFetchSubDir(t *testing.T) {
	url, _ := repo(t, "sha1",
		"mkdir -p a/b && echo x > a/b/f && ln -s / root && ln -s a/b link && echo top > top && git add . && git commit -qm one")
	dir, _, _, err := fetch(t, url+"#:a/b", Options{KeepGitDir: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "f")); got != "x\n" {
		t.Errorf("f = %q", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("subdir checkout holds %d entries, want only f (no .git with a subdir)", len(entries))
	}
	for _, sub := range []string{"root", "link", "root/etc", "top", "missing"} {
		if _, _, _, err := fetch(t, url+"#:"+sub, Options{}); err == nil || !strings.Contains(err.Error(), "invalid subdir") {
			t.Errorf("subdir %s: %v, want invalid subdir", sub, err)
		}
	}
}

func TestResolveErrors(t *testing.T) {
	url, git := repo(t, "sha1", "echo one > foo && git add foo && git commit -qm one && git tag v1", "echo 2 > foo && git commit -qam two")
	v1 := git("rev-parse", "v1")
	for src, want := range map[string]string{
		url + "#nope":                                  "repository does not contain ref nope",
		url + "?ref=" + v1[:8]:                         "repository does not contain ref",
		url + "?branch=v1":                             "repository does not contain ref refs/heads/v1",
		url + "?commit=" + v1[:8]:                      "expected checksum to match " + v1[:8],
		url + "?commit=xyz":                            "invalid checksum xyz for Git URL, expected hex commit hash",
		url + "#" + strings.Repeat("0", 40) + "?x":     "",
		url + "?ref=" + v1 + "&commit=" + v1[:6] + "f": "expected checksum to match",
	} {
		if want == "" {
			continue
		}
		r, err := Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Resolve(context.Background(), r, Options{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", src, err, want)
		}
	}
	// A commit that is not in the repository fails at the fetch.
	if _, _, _, err := fetch(t, url+"#"+strings.Repeat("0", 40), Options{}); err == nil {
		t.Error("fetch of a missing commit succeeded")
	}
}

// A repository cannot make git read host files through a file://
// submodule: submodules are fetched with protocol.file.allow=user.
func TestFetchRefusesFileSubmodule(t *testing.T) {
	sub, _ := repo(t, "sha1", "echo secret > s && git add s && git commit -qm s")
	url, _ := repo(t, "sha1", "git -c protocol.file.allow=always submodule add -q "+sub+" mod && git commit -qm with-sub")
	if _, _, _, err := fetch(t, url, Options{}); err == nil || !strings.Contains(err.Error(), "submodule") {
		t.Errorf("file:// submodule fetched: %v", err)
	}
	// Without submodules the fetch works and leaves the gitlink empty.
	dir, _, _, err := fetch(t, url+"?submodules=false", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "mod")); len(entries) != 0 {
		t.Errorf("mod holds %d entries", len(entries))
	}
}
