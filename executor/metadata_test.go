package executor

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/parser"
	"github.com/builder-dev/builder/planner"
	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
)

// parseCmd parses one instruction with buildkit's parser.
func parseCmd(t *testing.T, line string) instructions.Command {
	t.Helper()
	res, err := bkparser.Parse(bytes.NewBufferString("FROM scratch\n" + line + "\n"))
	if err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	c, err := instructions.ParseCommand(res.AST.Children[1])
	if err != nil {
		t.Fatalf("parse command %q: %v", line, err)
	}
	return c
}

func TestApplyMetadata(t *testing.T) {
	tests := []struct {
		line    string
		base    dockerspec.DockerOCIImage
		msg     string
		check   func(*dockerspec.DockerOCIImage) any
		want    any
		wantErr string
	}{
		{line: "ENV A=1 B=two", msg: "ENV A=1 B=two",
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.Env }, want: []string{"PATH=/bin", "A=1", "B=two"}},
		{line: "ENV PATH=/x", msg: "ENV PATH=/x",
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.Env }, want: []string{"PATH=/x"}},
		{line: "ENV legacy value with spaces", msg: "ENV legacy=value with spaces",
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.Env }, want: []string{"PATH=/bin", "legacy=value with spaces"}},
		{line: `CMD ["a", "b"]`, msg: `CMD ["a" "b"]`,
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.Cmd }, want: []string{"a", "b"}},
		{line: `CMD echo hi`, msg: `CMD ["/bin/sh" "-c" "echo hi"]`,
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.Cmd }, want: []string{"/bin/sh", "-c", "echo hi"}},
		{line: `CMD [not json`, msg: `CMD ["/bin/sh" "-c" "[not json"]`,
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.Cmd }, want: []string{"/bin/sh", "-c", "[not json"}},
		{line: `ENTRYPOINT ["/run"]`, msg: `ENTRYPOINT ["/run"]`,
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.Entrypoint }, want: []string{"/run"}},
		{line: "EXPOSE 80 53/UDP 8000-8001", msg: "EXPOSE [53/udp 80/tcp 8000/tcp 8001/tcp]",
			check: func(i *dockerspec.DockerOCIImage) any { return len(i.Config.ExposedPorts) }, want: 4},
		{line: "EXPOSE abc", wantErr: "invalid containerPort"},
		{line: "STOPSIGNAL SIGKILL", msg: "STOPSIGNAL SIGKILL",
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.StopSignal }, want: "SIGKILL"},
		{line: "STOPSIGNAL NOPE", wantErr: "signal"},
		{line: `SHELL ["/bin/bash", "-c"]`, msg: "SHELL [/bin/bash -c]",
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.Shell }, want: []string{"/bin/bash", "-c"}},
		{line: "USER app:app", msg: "USER app:app",
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.User }, want: "app:app"},
		{line: "VOLUME /data /logs", msg: "VOLUME [/data /logs]",
			check: func(i *dockerspec.DockerOCIImage) any { return len(i.Config.Volumes) }, want: 2},
		{line: "LABEL a=b c=e", msg: "LABEL a=b c=e",
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.Labels }, want: map[string]string{"a": "b", "c": "e"}},
		{line: "MAINTAINER someone", msg: "MAINTAINER someone",
			check: func(i *dockerspec.DockerOCIImage) any { return i.Author }, want: "someone"},
		{line: "ONBUILD RUN make", msg: "",
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.OnBuild }, want: []string{"RUN make"}},
		{line: "HEALTHCHECK NONE", msg: "HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}",
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.Healthcheck.Test }, want: []string{"NONE"}},
		{line: "HEALTHCHECK --interval=5s --retries=3 CMD true", msg: "HEALTHCHECK {Test:[CMD-SHELL true] Interval:5s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}",
			check: func(i *dockerspec.DockerOCIImage) any { return i.Config.Healthcheck.Retries }, want: 3},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			img := tt.base
			img.Config.Env = []string{"PATH=/bin"}
			msg, _, ok, err := applyMetadata(&img, parseCmd(t, tt.line), nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !ok {
				t.Fatalf("applyMetadata: ok=%v err=%v", ok, err)
			}
			if msg != tt.msg {
				t.Errorf("history = %q, want %q", msg, tt.msg)
			}
			if diff := cmp.Diff(tt.want, tt.check(&img)); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEntrypointResetsInheritedCmd(t *testing.T) {
	img := dockerspec.DockerOCIImage{}
	img.Config.Cmd = []string{"inherited"}
	// A stage's own CMD survives a later ENTRYPOINT; an inherited one does not.
	st := &stageState{img: img}
	if _, _, _, err := st.applyMetadata(parseCmd(t, `ENTRYPOINT ["/e"]`), nil); err != nil {
		t.Fatal(err)
	}
	if st.img.Config.Cmd != nil {
		t.Errorf("Cmd = %q, want reset", st.img.Config.Cmd)
	}
	if _, _, _, err := st.applyMetadata(parseCmd(t, `CMD ["own"]`), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := st.applyMetadata(parseCmd(t, `ENTRYPOINT ["/e"]`), nil); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"own"}, st.img.Config.Cmd); diff != "" {
		t.Errorf("Cmd (-want +got):\n%s", diff)
	}
}

func TestResolveWorkdir(t *testing.T) {
	for _, tt := range []struct{ cur, p, want string }{
		{"", "/a", "/a"}, {"/a", "b", "/a/b"}, {"/a/b", "../c", "/a/c"}, {"", "rel", "/rel"}, {"/x", "/y/../z/", "/y/../z/"}, {"/a/b", "c/../d", "/a/b/d"},
	} {
		if got := resolveWorkdir(tt.cur, tt.p); got != tt.want {
			t.Errorf("resolveWorkdir(%q, %q) = %q, want %q", tt.cur, tt.p, got, tt.want)
		}
	}
}

func TestRunArgvAndHistory(t *testing.T) {
	tests := []struct {
		line    string
		shell   []string
		args    []string
		names   []string // the ARGs declared in scope
		env     []string
		argv    []string
		history string
	}{
		{line: "RUN echo hi", argv: []string{"/bin/sh", "-c", "echo hi"}, history: "/bin/sh -c echo hi"},
		{line: `RUN ["ls", "-l"]`, argv: []string{"ls", "-l"}, history: "ls -l"},
		{line: "RUN echo $V", shell: []string{"/bin/ash", "-eo"}, args: []string{"V=1"}, names: []string{"V"},
			argv: []string{"/bin/ash", "-eo", "echo $V"}, history: "|1 V=1 /bin/ash -eo echo $V"},
		{line: "RUN echo", args: []string{"V=1"}, names: []string{"V"}, env: []string{"V=env"}, argv: []string{"/bin/sh", "-c", "echo"}, history: "|1 V=env /bin/sh -c echo"},
		// An ARG without a value is named with an empty one; proxy args
		// (in Args, never declared) are not named.
		{line: "RUN echo", args: []string{"B=1", "HTTP_PROXY=http://p", "http_proxy=http://p"}, names: []string{"A", "B"},
			argv: []string{"/bin/sh", "-c", "echo"}, history: "|2 A= B=1 /bin/sh -c echo"},
		{line: "RUN echo", names: []string{"A"}, env: []string{"A=env"}, argv: []string{"/bin/sh", "-c", "echo"}, history: "|1 A=env /bin/sh -c echo"},
		{line: "RUN <<EOF\necho a\necho b\nEOF", argv: []string{"/bin/sh", "-c", "echo a\necho b\n"}, history: "/bin/sh -c echo a\necho b\n"},
		{line: "RUN cat <<EOF > /f\nx\nEOF", argv: []string{"/bin/sh", "-c", "cat <<EOF > /f\nx\nEOF"}, history: "/bin/sh -c cat <<EOF > /f\nx\nEOF"},
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
			step := &planner.Step{Env: tt.env, Args: tt.args, ArgNames: tt.names}
			if got := runCommandString(argv, step); got != tt.history {
				t.Errorf("history = %q, want %q", got, tt.history)
			}
		})
	}
}

func TestRunEnv(t *testing.T) {
	step := &planner.Step{Env: []string{"A=env"}, Args: []string{"A=arg", "B=arg"}}
	want := []string{"A=env", "B=arg", "PATH=" + planner.DefaultPath}
	if diff := cmp.Diff(want, runEnv(step)); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
}

func TestCopyHistoryText(t *testing.T) {
	c := parseCmd(t, "COPY --chown=1:2 --chmod=755 a b* /dst/").(*instructions.CopyCommand)
	if got, want := copyRequestOf(c).historyText(), "COPY --chown=1:2 --chmod=755 a b* /dst/ # buildkit"; got != want {
		t.Errorf("history = %q, want %q", got, want)
	}
	a := parseCmd(t, "ADD https://x/y.tgz /").(*instructions.AddCommand)
	if got, want := addRequestOf(a).historyText(), "ADD https://x/y.tgz / # buildkit"; got != want {
		t.Errorf("history = %q, want %q", got, want)
	}
}

func TestArgHistory(t *testing.T) {
	tests := []struct {
		name, src string
		buildArgs map[string]*string
		want      []string // history of the ARG steps
	}{
		{"redeclared takes the new value", "FROM scratch\nARG foo=bar\nARG bar=123\nARG foo=bar2\n", nil,
			[]string{"ARG foo=bar", "ARG bar=123", "ARG foo=bar2"}},
		{"no value", "FROM scratch\nARG foo\n", nil, []string{"ARG foo"}},
		{"global value", "ARG g=1\nFROM scratch\nARG g\nARG g=2 h\n", nil, []string{"ARG g=1", "ARG g=2 h"}},
		{"build arg wins", "FROM scratch\nARG a=1\nARG a=2\n", map[string]*string{"a": ptr("x")}, []string{"ARG a=x", "ARG a=x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			df, err := parser.Parse(strings.NewReader(tt.src), "Dockerfile")
			if err != nil {
				t.Fatal(err)
			}
			p, err := planner.New(t.Context(), df, planner.Options{BuildArgs: tt.buildArgs})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, step := range p.Target.Steps {
				c := step.Cmd.(*instructions.ArgCommand)
				msg, _, _, err := applyMetadata(&dockerspec.DockerOCIImage{}, c, argValues(c))
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, msg)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("history (-want +got):\n%s", diff)
			}
		})
	}
}

func ptr(s string) *string { return &s }

// TestImageStageGetsDefaultPath: a stage FROM an image whose config has no
// PATH gets the default one in its image config, as BuildKit appends it
// to every stage it dispatches; a PATH the image has is kept.
func TestImageStageGetsDefaultPath(t *testing.T) {
	for _, tt := range []struct {
		env  []string
		want []string
	}{
		{nil, []string{"PATH=" + planner.DefaultPath, "A=1"}},
		{[]string{"HOME=/h"}, []string{"HOME=/h", "PATH=" + planner.DefaultPath, "A=1"}},
		{[]string{"PATH=/only"}, []string{"PATH=/only", "A=1"}},
	} {
		img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: "amd64",
			RootFS: v1.RootFS{Type: "layers"}, Config: v1.Config{Env: tt.env}})
		if err != nil {
			t.Fatal(err)
		}
		f := newFakeBuild(t)
		f.addImage("base-image", img)
		res, _ := f.mustRun("FROM base-image\nENV A=1\n")
		cfg, err := res.Image.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, cfg.Config.Env); diff != "" {
			t.Errorf("base env %q: config Env (-want +got):\n%s", tt.env, diff)
		}
	}
}

// TestImageWithoutHistory: the layers of a base image whose history lists
// none of them get BuildKit's exporter entries, "pulled from" the image
// and dated when the store got it, and a step's entry takes the time of
// the layer at its place (a base layer here), as BuildKit dates them.
func TestImageWithoutHistory(t *testing.T) {
	var layers []v1.Layer
	var diffIDs []v1.Hash
	for range 2 {
		l, err := random.Layer(64, types.OCIUncompressedLayer)
		if err != nil {
			t.Fatal(err)
		}
		layers, diffIDs = append(layers, l), append(diffIDs, mustDiffID(t, l))
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: "amd64",
		RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs}}); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	pulled := "pulled from docker.io/library/base-image:latest@" + d.String()
	type entry struct {
		CreatedBy string
		Stored    bool // dated when the store got the image
	}
	for _, tt := range []struct {
		df   string
		want []entry
	}{
		{"FROM base-image\nENV A=1\n", []entry{{"ENV A=1", true}, {pulled, true}, {pulled, true}}},
		{"FROM base-image\nENV A=1\nRUN echo x > /x\n", []entry{{"ENV A=1", true}, {"RUN /bin/sh -c echo x > /x # buildkit", true}, {pulled, true}, {"mount / from exec /bin/sh -c echo x > /x", false}}},
	} {
		f := newFakeBuild(t)
		f.addImage("base-image", img)
		res, _ := f.mustRun(tt.df)
		cfg, err := res.Image.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		var got []entry
		for _, h := range cfg.History {
			if h.Created.IsZero() {
				t.Errorf("%q: entry %q has no time", tt.df, h.CreatedBy)
			}
			got = append(got, entry{h.CreatedBy, h.Created.Time.Equal(storedAt)})
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%q: history (-want +got):\n%s", tt.df, diff)
		}
		if last := cfg.History[len(cfg.History)-1].Created; !cfg.Created.Equal(last.Time) {
			t.Errorf("%q: created %s, want the last entry's %s", tt.df, cfg.Created, last)
		}
	}
}

// TestWindowsPaths: a Windows image's WORKDIR and COPY destination are
// normalized as BuildKit's util/system does: the system drive's letter
// dropped (another drive is an error), backslashes as separators (the
// config's working directory keeps them, the paths in the root do not);
// and a base image's working directory as BuildKit dispatches it (a
// relative one joined to itself made absolute).
func TestWindowsPaths(t *testing.T) {
	for _, tt := range []struct{ cur, p, os, want, err string }{
		{`\`, `C:\app`, "windows", `\app`, ""},
		{`\app`, `sub\dir`, "windows", `\app\sub\dir`, ""},
		{`\app`, `c:/x/y`, "windows", `\x\y`, ""},
		{`\`, `D:\x`, "windows", "", "system drive"},
		{"/app", `C:\x`, "linux", `/app/C:\x`, ""},
	} {
		got, err := resolveWorkdirFor(tt.cur, tt.p, tt.os)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("resolveWorkdirFor(%q, %q, %s) = %q, %v; want %q, error %q", tt.cur, tt.p, tt.os, got, err, tt.want, tt.err)
		}
	}
	for _, tt := range []struct{ wd, os, want string }{
		{"", "linux", ""},
		{"/w", "linux", "/w"},
		{"/x/../y/", "linux", "/x/../y/"},
		{"app/x", "linux", "/app/x/app/x"},
		{`C:\`, "windows", `\`},
		{`C:\app`, "windows", `\app`},
	} {
		if got, err := baseImageWorkdir(tt.wd, tt.os); err != nil || got != tt.want {
			t.Errorf("baseImageWorkdir(%q, %s) = %q, %v; want %q", tt.wd, tt.os, got, err, tt.want)
		}
	}
	for _, tt := range []struct {
		workdir, dest, want string
		dir                 bool
	}{
		{"/", `C:\dst\`, "/dst", true},
		{"/app", `sub\`, "/app/sub", true},
		{"/app", `c:/f`, "/f", false},
	} {
		p := &copyPlan{req: copyRequest{Sources: []string{"f"}, Dest: tt.dest, Workdir: tt.workdir, OS: "windows"}}
		if err := p.validate(); err != nil || p.dest != tt.want || p.destDir != tt.dir {
			t.Errorf("COPY f %s in %s: dest %q (dir %v), %v; want %q (dir %v)", tt.dest, tt.workdir, p.dest, p.destDir, err, tt.want, tt.dir)
		}
	}
}

// TestWindowsBaseLayers: a stage on a Windows base image reads its
// layers' files from their Files/ directories and writes its layers in
// the Windows layer format, as BuildKit does, but a COPY --link layer,
// made on scratch, in the ordinary one; a COPY --from such an image or
// stage reads its Files/ too. A Windows image FROM scratch has ordinary
// layers. The result says which.
func TestWindowsBaseLayers(t *testing.T) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarOf(t, false, map[string]time.Time{"a": time.Unix(1600000000, 0)}))), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg.OS, cfg.Architecture, cfg.Config.WorkingDir = "windows", "amd64", `C:\`
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		df      string
		use     []string
		windows []bool
	}{
		{"FROM win-image\nCMD [\"x.exe\"]\n", nil, []bool{true}},
		{"FROM win-image\nCOPY f /f\n", []string{"prepare [true]", "commit"}, []bool{true, true}},
		{"FROM win-image\nCOPY --link f /f\nCOPY f /g\n", []string{"prepare [true false]", "commit"}, []bool{true, false, true}},
		{"FROM win-image AS w\nFROM w\nWORKDIR /app\n", []string{"prepare [true]", "commit"}, []bool{true, true}},
		{"FROM scratch\nCOPY --from=win-image /a /a\n", []string{"prepare view [true]"}, nil},
		{"FROM win-image AS w\nCOPY --link f /f\nFROM scratch\nCOPY --from=w /f /f\n", []string{"prepare view [true false]"}, nil},
	} {
		f := newFakeBuild(t)
		f.write("f", "f")
		f.addImage("win-image", img)
		res, _ := f.mustRun(tt.df)
		if got := f.sn.windowsUse(); !slices.Equal(got, tt.use) {
			t.Errorf("%q: Windows snapshots %q, want %q", tt.df, got, tt.use)
		}
		if !slices.Equal(res.WindowsLayers, tt.windows) {
			t.Errorf("%q: WindowsLayers %v, want %v", tt.df, res.WindowsLayers, tt.windows)
		}
	}
}
