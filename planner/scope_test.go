package planner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/builder-dev/builder/parser"
	"github.com/google/go-cmp/cmp"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// expanded renders the expanded command of a step for comparison.
func expanded(s *Step) string {
	switch c := s.Cmd.(type) {
	case *instructions.EnvCommand:
		var kv []string
		for _, e := range c.Env {
			kv = append(kv, e.Key+"="+e.Value)
		}
		return "ENV " + strings.Join(kv, " ")
	case *instructions.UserCommand:
		return "USER " + c.User
	case *instructions.WorkdirCommand:
		return "WORKDIR " + c.Path
	case *instructions.CopyCommand:
		return fmt.Sprintf("COPY chown=%s %v %s", c.Chown, c.SourcePaths, c.DestPath)
	case *instructions.AddCommand:
		return fmt.Sprintf("ADD %v %s", c.SourcePaths, c.DestPath)
	case *instructions.LabelCommand:
		var kv []string
		for _, l := range c.Labels {
			kv = append(kv, l.Key+"="+l.Value)
		}
		return fmt.Sprintf("LABEL %v", kv)
	case *instructions.ExposeCommand:
		return fmt.Sprintf("EXPOSE %v", c.Ports)
	case *instructions.VolumeCommand:
		return fmt.Sprintf("VOLUME %v", c.Volumes)
	case *instructions.StopSignalCommand:
		return "STOPSIGNAL " + c.Signal
	case *instructions.RunCommand:
		return fmt.Sprintf("RUN %v", c.CmdLine)
	case *instructions.CmdCommand:
		return fmt.Sprintf("CMD %v", c.CmdLine)
	case *instructions.ArgCommand:
		var kv []string
		for _, a := range c.Args {
			kv = append(kv, a.Key+"="+a.ValueString())
		}
		return "ARG " + strings.Join(kv, " ")
	}
	return fmt.Sprint(s.Cmd)
}

func TestExpansion(t *testing.T) {
	src := `FROM busybox
ENV DIR=app PORT=8080 SRC=src
WORKDIR /srv/$DIR
COPY --chown=$DIR $SRC/ /dst/${DIR}/
ADD $SRC.tar /$DIR
LABEL version="${PORT}" dir=$DIR
EXPOSE $PORT 9090/udp
VOLUME /data/$DIR
USER ${DIR}:${DIR}
STOPSIGNAL $SIG
RUN echo $DIR
CMD echo $DIR
ENV PATH=/opt/bin:$PATH BB=$BB-2
`
	p, _ := mustPlan(t, src, Options{})
	want := []string{
		"ENV DIR=app PORT=8080 SRC=src",
		"WORKDIR /srv/app",
		"COPY chown=app [src/] /dst/app/",
		"ADD [src.tar] /app",
		"LABEL [version=8080 dir=app]",
		"EXPOSE [8080 9090/udp]",
		"VOLUME [/data/app]",
		"USER app:app",
		"STOPSIGNAL ",
		"RUN [echo $DIR]",
		"CMD [echo $DIR]",
		"ENV PATH=/opt/bin:/bin BB=1-2",
	}
	var got []string
	for _, s := range p.Target.Steps {
		got = append(got, expanded(s))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("expanded steps (-want +got):\n%s", diff)
	}
	last := p.Target.Steps[len(p.Target.Steps)-1]
	if diff := cmp.Diff([]string{"PATH=/bin", "BB=1", "DIR=app", "PORT=8080", "SRC=src"}, last.Env); diff != "" {
		t.Errorf("env before last step (-want +got):\n%s", diff)
	}
}

func TestEscapeDirective(t *testing.T) {
	p, _ := mustPlan(t, "# escape=`\nFROM busybox\nENV A=x\nWORKDIR C:\\$A\\`$A\n", Options{})
	if got := expanded(p.Target.Steps[1]); got != `WORKDIR C:\x\$A` {
		t.Errorf("got %s", got)
	}
}

func TestArgScoping(t *testing.T) {
	tests := []struct {
		name, src string
		args      map[string]*string
		want      []string // expanded steps of the target
	}{
		{"docs scope example", "FROM busybox\nUSER ${username:-some_user}\nARG username\nUSER $username\n",
			map[string]*string{"username": str("what_user")},
			[]string{"USER some_user", "ARG username=what_user", "USER what_user"}},
		{"meta arg needs redeclaring", "ARG V=1\nFROM busybox\nENV A=$V\nARG V\nENV B=$V\n", nil,
			[]string{"ENV A=", "ARG V=1", "ENV B=1"}},
		{"stage default beats meta", "ARG V=1\nFROM busybox\nARG V=2\nENV B=$V\n", nil,
			[]string{"ARG V=2", "ENV B=2"}},
		{"build arg beats default", "ARG V=1\nFROM busybox\nARG V=2\nENV B=$V\n", map[string]*string{"V": str("3")},
			[]string{"ARG V=3", "ENV B=3"}},
		{"default expands earlier args", "FROM busybox\nARG A=x\nARG B=${A}y\nENV C=$B\n", nil,
			[]string{"ARG A=x", "ARG B=xy", "ENV C=xy"}},
		{"args of one ARG are declared in turn", "FROM busybox\nARG A=x B=${A}y\nENV C=$B\n", nil,
			[]string{"ARG A=x B=xy", "ENV C=xy"}},
		{"build arg of an earlier arg of one ARG", "FROM busybox\nARG A=x B=${A}y\n", map[string]*string{"A": str("z")},
			[]string{"ARG A=z B=zy"}},
		{"env overrides arg", "FROM busybox\nARG V\nENV V=v1.0.0\nENV W=$V\n", map[string]*string{"V": str("v2.0.1")},
			[]string{"ARG V=v2.0.1", "ENV V=v1.0.0", "ENV W=v1.0.0"}},
		{"env from arg default", "FROM busybox\nARG V\nENV V=${V:-v1.0.0}\n", nil,
			[]string{"ARG V=", "ENV V=v1.0.0"}},
		{"platform arg needs declaring", "FROM busybox\nENV A=$TARGETOS\nARG TARGETOS\nENV B=$TARGETOS\n", nil,
			[]string{"ENV A=", "ARG TARGETOS=linux", "ENV B=linux"}},
		{"args inherited from base stage", "FROM busybox AS base\nARG V=1\nFROM base\nENV A=$V\n", nil,
			[]string{"ENV A=1"}},
		{"args not shared by unrelated stages", "FROM busybox AS one\nARG V=1\nFROM busybox\nCOPY --from=one /a /$V\n", nil,
			[]string{"COPY chown= [/a] /"}},
		{"redeclared without a value keeps the value", "FROM busybox\nARG V=1\nARG V\nENV B=$V\n", nil,
			[]string{"ARG V=1", "ARG V=", "ENV B=1"}},
		{"redeclared without a value takes the meta value", "ARG V=g\nFROM busybox\nARG V=1\nARG V\nENV B=$V\n", nil,
			[]string{"ARG V=1", "ARG V=g", "ENV B=g"}},
		{"arg after env wins until the next env", "FROM busybox\nENV A=env\nARG A=arg\nENV B=$A\nENV A=env2\nENV C=$A\n", nil,
			[]string{"ENV A=env", "ARG A=arg", "ENV B=arg", "ENV A=env2", "ENV C=env2"}},
		{"arg after env, in one ARG", "FROM busybox\nENV A=env\nARG A=arg B=$A\nENV C=$B\n", nil,
			[]string{"ENV A=env", "ARG A=arg B=arg", "ENV C=arg"}},
		{"arg after env, redeclared without a value", "FROM busybox\nENV A=env\nARG A\nENV B=$A\n", nil,
			[]string{"ENV A=env", "ARG A=", "ENV B=env"}},
		{"proxy args not expanded", "FROM busybox\nENV P=$HTTP_PROXY\n", map[string]*string{"HTTP_PROXY": str("http://p")},
			[]string{"ENV P="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := mustPlan(t, tt.src, Options{BuildArgs: tt.args})
			var got []string
			for _, s := range p.Target.Steps {
				got = append(got, expanded(s))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStepArgs(t *testing.T) {
	src := `FROM busybox
ARG A=1 B
ARG HTTP_PROXY
ENV B=env
RUN make
COPY $A /x
ENV C=$B
`
	args := map[string]*string{"B": str("2"), "HTTP_PROXY": str("http://p"), "https_proxy": str("http://s"), "UNUSED": str("x")}
	p, _ := mustPlan(t, src, Options{BuildArgs: args})
	run := stepByLine(t, p.Target, 5)
	// As BuildKit's ProxyEnv, a proxy build arg sets both spellings.
	if diff := cmp.Diff([]string{"A=1", "B=2", "HTTP_PROXY=http://p", "http_proxy=http://p", "HTTPS_PROXY=http://s", "https_proxy=http://s"}, run.Args); diff != "" {
		t.Errorf("RUN Args (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"UNUSED"}, p.UnusedBuildArgs); diff != "" {
		t.Errorf("UnusedBuildArgs (-want +got):\n%s", diff)
	}
}

// TestStepArgNames: a step names every ARG declared before it, with a
// value or not, redeclared ones once, and no proxy args (BuildKit's RUN
// history).
func TestStepArgNames(t *testing.T) {
	src := "FROM busybox AS base\nARG A\nFROM base\nARG B=1 HTTP_PROXY\nARG A\nRUN make\n"
	p, _ := mustPlan(t, src, Options{BuildArgs: map[string]*string{"https_proxy": str("http://s")}})
	run := stepByLine(t, p.Target, 6)
	if diff := cmp.Diff([]string{"A", "B", "HTTP_PROXY"}, run.ArgNames); diff != "" {
		t.Errorf("RUN ArgNames (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"B=1", "HTTPS_PROXY=http://s", "https_proxy=http://s"}, run.Args); diff != "" {
		t.Errorf("RUN Args (-want +got):\n%s", diff)
	}
}

// TestStepEnvArgAfterEnv: RUN's environment has the value of an ARG
// declared after the ENV of the same name (BuildKit's stage environment),
// the image env value again after a later ENV, and in a stage built on
// that one (BuildKit sets the image env again on the base stage's state;
// checked against buildkitd), until an ARG sets it again.
func TestStepEnvArgAfterEnv(t *testing.T) {
	src := "FROM busybox AS base\nENV A=env B=env\nARG A=arg\nRUN one\nFROM base\nRUN two\nENV A=env2\nRUN three\nARG A=arg3\nRUN four\n"
	p, _ := mustPlan(t, src, Options{})
	for _, tt := range []struct {
		stage, line int
		want        []string
	}{
		{0, 4, []string{"PATH=/bin", "BB=1", "A=arg", "B=env"}},
		{1, 6, []string{"PATH=/bin", "BB=1", "A=env", "B=env"}},
		{1, 8, []string{"PATH=/bin", "BB=1", "A=env2", "B=env"}},
		{1, 10, []string{"PATH=/bin", "BB=1", "A=arg3", "B=env"}},
	} {
		if diff := cmp.Diff(tt.want, stepByLine(t, p.Stages[tt.stage], tt.line).Env); diff != "" {
			t.Errorf("line %d: Env (-want +got):\n%s", tt.line, diff)
		}
	}
}

func TestUnusedBuildArgs(t *testing.T) {
	src := "ARG META\nFROM busybox AS a\nARG INA\nFROM busybox\nARG INB\n"
	args := map[string]*string{"META": str("1"), "INA": str("1"), "INB": str("1"), "TARGETOS": str("linux"), "no_proxy": str("x"), "LOST": str("1"), "NIL": nil}
	p, _ := mustPlan(t, src, Options{BuildArgs: args})
	// stage a is not built, so INA is not consumed.
	if diff := cmp.Diff([]string{"INA", "LOST"}, p.UnusedBuildArgs); diff != "" {
		t.Errorf("UnusedBuildArgs (-want +got):\n%s", diff)
	}
}

func TestBaseEnv(t *testing.T) {
	src := "FROM scratch AS s\nRUN true\nFROM golang AS g\nENV X=1\nFROM g\nRUN true\n"
	p, _ := mustPlan(t, src, Options{Target: "s"})
	if diff := cmp.Diff([]string{"PATH=" + DefaultPath}, p.Target.Steps[0].Env); diff != "" {
		t.Errorf("scratch env (-want +got):\n%s", diff)
	}
	p, _ = mustPlan(t, src, Options{})
	if diff := cmp.Diff([]string{"GOPATH=/go", "PATH=" + DefaultPath, "X=1"}, p.Target.Steps[0].Env); diff != "" {
		t.Errorf("stage env (-want +got):\n%s", diff)
	}
}

func TestHeredocExpansion(t *testing.T) {
	src := "FROM busybox\nENV NAME=world\nCOPY <<EOF /a\nhello $NAME\nEOF\nCOPY <<'EOF' /b\nhello $NAME\nEOF\nRUN <<EOF\necho $NAME\nEOF\n"
	p, _ := mustPlan(t, src, Options{})
	a := p.Target.Steps[1].Cmd.(*instructions.CopyCommand).SourceContents[0].Data
	b := p.Target.Steps[2].Cmd.(*instructions.CopyCommand).SourceContents[0].Data
	r := p.Target.Steps[3].Cmd.(*instructions.RunCommand).Files[0].Data
	if a != "hello world\n" || b != "hello $NAME\n" || r != "echo $NAME\n" {
		t.Errorf("heredocs: %q %q %q", a, b, r)
	}
}

func TestOriginalUnchanged(t *testing.T) {
	df := mustParse(t, "FROM busybox\nENV A=1\nWORKDIR /$A\nRUN --mount=type=cache,target=/$A true\n")
	f := newFake()
	for range 2 {
		p, err := New(t.Context(), df, Options{ResolveImage: f.resolve})
		if err != nil {
			t.Fatal(err)
		}
		if got := expanded(p.Target.Steps[1]); got != "WORKDIR /1" {
			t.Errorf("got %s", got)
		}
		m := instructions.GetMounts(p.Target.Steps[2].Cmd.(*instructions.RunCommand))
		if m[0].Target != "/1" {
			t.Errorf("mount target %q", m[0].Target)
		}
	}
	if w := df.Stages[0].Commands[1].(*instructions.WorkdirCommand).Path; w != "/$A" {
		t.Errorf("parsed Dockerfile changed: WORKDIR %s", w)
	}
}

func TestCancelledContext(t *testing.T) {
	df := mustParse(t, "FROM busybox\n")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := New(ctx, df, Options{ResolveImage: newFake().resolve})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
}

// TestExpansionBudget: ENV and ARG lines that double a value stop with an
// error at a line once 16 MiB were substituted, instead of allocating
// 2^40 bytes (found while writing FuzzPlan).
func TestExpansionBudget(t *testing.T) {
	for _, src := range []string{
		"FROM busybox\nENV A=xxxxxxxxxxxxxxxx\n" + strings.Repeat("ENV A=$A$A\n", 40),
		"FROM busybox\nARG A=xxxxxxxxxxxxxxxx\n" + strings.Repeat("ARG A=$A$A\n", 40),
		"ARG A=xxxxxxxxxxxxxxxx\n" + strings.Repeat("ARG A=$A$A\n", 40) + "FROM busybox\n",
		"FROM busybox\nENV A=xxxxxxxxxxxxxxxx\n" + strings.Repeat("ENV A=$A$A\n", 18) + "LABEL l=" + strings.Repeat("$A", 100) + "\n",
	} {
		_, _, err := plan(t, src, Options{})
		var pe *parser.Error
		if !errors.As(err, &pe) || pe.Line < 2 || !strings.Contains(err.Error(), "more than 16 MiB") {
			t.Errorf("error %v, want a *parser.Error at a line saying more than 16 MiB", err)
		}
	}
	// 18 doublings of 16 bytes (4 MiB, 8 MiB substituted) stay within it.
	src := "FROM busybox\nENV A=xxxxxxxxxxxxxxxx\n" + strings.Repeat("ENV A=$A$A\n", 18)
	p, _ := mustPlan(t, src, Options{})
	if v, _ := envGet(p.Target.Steps[len(p.Target.Steps)-1].Env, "A"); len(v) != 16<<17 {
		t.Errorf("A before the last ENV has %d bytes, want %d", len(v), 16<<17)
	}
}

// TestArgDefaultRequired: ${FOO:?msg} in an ARG default fails with msg
// when FOO is unset, and is never evaluated when a build arg sets the ARG
// (BuildKit testArgDefaultExpansion).
func TestArgDefaultRequired(t *testing.T) {
	src := "FROM scratch\nARG FOO\nARG BAR=${FOO:?\"foo missing\"}\n"
	if _, _, err := plan(t, src, Options{}); err == nil || !strings.Contains(err.Error(), "FOO: foo missing") {
		t.Errorf("FOO unset: %v, want FOO: foo missing", err)
	}
	for _, args := range []map[string]*string{{"FOO": str("123")}, {"BAR": str("123")}} {
		if _, _, err := plan(t, src, Options{BuildArgs: args}); err != nil {
			t.Errorf("build args %v: %v", args, err)
		}
	}
}
