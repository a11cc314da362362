package executor

import (
	"strings"
	"testing"

	"github.com/builder-dev/builder/internal/buildcontext"
)

func TestCopyParentsInputs(t *testing.T) {
	t.Parallel()
	ctxDir, _, _ := copySetup(t)
	c, err := buildcontext.Open(ctxDir, nil)
	copyCheck(t, err)
	prepare := func(srcs ...string) ([]string, map[string]string) {
		p, err := copyPrepare(t.Context(), copyRequest{Context: c, Sources: srcs, Dest: "/x/", Parents: true})
		copyCheck(t, err)
		var in []string
		for _, f := range p.Inputs() {
			in = append(in, f.Path+" "+f.Type)
		}
		fields := map[string]string{}
		for _, f := range p.Fields() {
			fields[f.Name] = f.Value
		}
		return in, fields
	}
	in, fields := prepare("sub/deep/h", "sub/f")
	want := []string{"0/sub dir", "0/sub/deep dir", "0/sub/deep/h file", "1/sub dir", "1/sub/f file"}
	if strings.Join(in, "\n") != strings.Join(want, "\n") {
		t.Errorf("inputs:\n%s\nwant:\n%s", strings.Join(in, "\n"), strings.Join(want, "\n"))
	}
	if fields["flag.parents"] != "true" || fields["source.0.pivot.sub/deep/h"] != "." {
		t.Errorf("fields %v", fields)
	}
	_, pivoted := prepare("sub/./deep/h", "sub/f")
	if pivoted["source.0.pivot.sub/deep/h"] != "sub" {
		t.Errorf("a pivot does not reach the key: %v", pivoted)
	}
}
