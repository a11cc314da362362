package planner

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestStepNames: the progress text of each vertex as BuildKit's
// dockerfile2llb names it (processCmdEnv, withSecretEnvMask,
// summarizeHeredoc); "" for the steps that make no vertex.
func TestStepNames(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string // Name of each step of the target
	}{
		{"run expands set variables and keeps quotes, escapes and unset ones",
			"FROM busybox\nENV A=1\nARG B=two\nrun echo \"$A\" '$B' \\$A $UNSET ${A}x\n",
			[]string{"", "", `RUN echo "1" '$B' \$A $UNSET 1x`}},
		{"secret env is masked",
			"FROM busybox\nENV S=foo\nRUN --mount=type=secret,id=s,env=S [ \"$S\" == pw ]\n",
			[]string{"", `RUN --mount=type=secret,id=s,env=S [ "****" == pw ]`}},
		{"copy and workdir expand like their arguments",
			"FROM busybox\nENV D=/d\nCOPY \"a\" $D/\nWORKDIR $D\nADD x ${D}\n",
			[]string{"", "COPY a /d/", "WORKDIR /d", "ADD x /d"}},
		{"one line for continued lines",
			"FROM busybox\nRUN echo a \\\n  b\n",
			[]string{"RUN echo a   b"}},
		{"heredoc summary",
			"FROM busybox\nRUN <<EOF\necho one\necho two\nEOF\nRUN <<EOF\n  single\nEOF\n",
			[]string{"RUN <<EOF (echo one...)", "RUN <<EOF (single)"}},
		{"metadata steps make no vertex",
			"FROM busybox\nENV A=1\nLABEL a=b\nCMD x\n",
			[]string{"", "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := mustPlan(t, tt.src, Options{})
			var got []string
			for _, s := range p.Target.Steps {
				got = append(got, s.Name)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("names %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("step %d name %q, want %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestStepNameOfTrigger(t *testing.T) {
	f := newFake()
	f.images["onb"] = v1.Config{OnBuild: []string{"RUN echo $HOME", "ENV A=1"}}
	p, err := New(t.Context(), mustParse(t, "FROM onb\n"), Options{ResolveImage: f.resolve})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Target.Steps[0].Name; got != "ONBUILD RUN echo $HOME" {
		t.Errorf("trigger name %q", got)
	}
	if got := p.Target.Steps[1].Name; got != "" {
		t.Errorf("metadata trigger name %q", got)
	}
}
