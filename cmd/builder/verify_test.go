package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/parser"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func parseDF(t *testing.T, text string) *parser.Dockerfile {
	t.Helper()
	df, err := parser.Parse(strings.NewReader(text), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	return df
}

func TestEnsureEpoch(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	dir := t.TempDir()
	for _, c := range []struct {
		name, dockerfile string
		args             []string
		env              string
		want, from       string
	}{
		{"build arg", "FROM x\n", []string{"SOURCE_DATE_EPOCH=5"}, "", "5", "--build-arg"},
		{"environment", "FROM x\n", []string{"SOURCE_DATE_EPOCH=7"}, "7", "7", "the environment"},
		{"meta ARG", "ARG SOURCE_DATE_EPOCH=1600000000\nFROM x\n", nil, "", "1600000000", "the Dockerfile's ARG SOURCE_DATE_EPOCH"},
		{"stage ARG", "FROM x\nARG SOURCE_DATE_EPOCH=42\n", nil, "", "42", "the Dockerfile's ARG SOURCE_DATE_EPOCH"},
		{"build arg wins", "ARG SOURCE_DATE_EPOCH=1\nFROM x\n", []string{"SOURCE_DATE_EPOCH=9"}, "", "9", "--build-arg"},
		{"not a number", "ARG SOURCE_DATE_EPOCH=$T\nFROM x\n", nil, "", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("SOURCE_DATE_EPOCH", c.env)
			f := &buildFlags{buildArgs: c.args}
			from, err := ensureEpoch(f, parseDF(t, c.dockerfile), dir)
			if c.from == "" {
				if err == nil || !strings.Contains(err.Error(), "needs SOURCE_DATE_EPOCH") {
					t.Errorf("ensureEpoch = %q, %v; want an error", from, err)
				}
				return
			}
			if err != nil || from != c.from || buildArgValue(f.buildArgs, "SOURCE_DATE_EPOCH") != c.want {
				t.Errorf("ensureEpoch = %q, %v, args %q; want %s from %s", from, err, f.buildArgs, c.want, c.from)
			}
		})
	}
}

func TestGitCommitTime(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c"}} {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_COMMITTER_DATE=1234567890 +0200")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	if v, err := gitCommitTime(sub); err != nil || v != "1234567890" {
		t.Errorf("gitCommitTime(subdir) = %q, %v", v, err)
	}
	if c := gitCommit(sub); len(c) != 40 {
		t.Errorf("gitCommit = %q", c)
	}
	if _, err := gitCommitTime(t.TempDir()); err == nil {
		t.Error("gitCommitTime outside a checkout succeeded")
	}
}

func TestRebuildFlags(t *testing.T) {
	dir := t.TempDir()
	df := filepath.Join(dir, "Dockerfile")
	text := "FROM busybox\nRUN true\n"
	os.WriteFile(df, []byte(text), 0o644)
	req := &cache.BuildRequest{ContextDir: dir, Dockerfile: df, DockerfileText: text, Target: "t", Platforms: []string{"linux/amd64"},
		BuildArgs: []string{"A=1"}, Secrets: []string{"id=s,src=/s"}, Network: "none"}
	req.DockerfileDigest = buildRequest(&buildFlags{}, dir, df, parseDF(t, text), []v1.Platform{hostPlatform()}, nil, nil).DockerfileDigest
	var said []string
	v := &verifier{progress: "plain", say: func(s string) { said = append(said, s) }}
	fresh := &app{}
	f, err := v.rebuildFlags(fresh, req, "/iid")
	if err != nil {
		t.Fatal(err)
	}
	if f.file != df || !f.noCache || f.target != "t" || strings.Join(f.platforms, ",") != "linux/amd64" || f.network != "none" || f.iidfile != "/iid" ||
		strings.Join(f.buildArgs, ",") != "A=1" || strings.Join(f.secrets, ",") != "id=s,src=/s" || len(f.tags)+len(f.outputs) != 0 || len(said) != 0 {
		t.Errorf("rebuild flags %+v (said %q)", f, said)
	}
	// A changed Dockerfile: the recorded text goes in on stdin.
	os.WriteFile(df, []byte("FROM busybox\nRUN false\n"), 0o644)
	f, err = v.rebuildFlags(fresh, req, "/iid")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(fresh.stdin)
	if f.file != "-" || string(got) != text || len(said) != 1 || !strings.Contains(said[0], "changed since the build") {
		t.Errorf("changed Dockerfile: file %q, stdin %q, said %q", f.file, got, said)
	}
}
