package planner

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/builder-dev/builder/parser"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestParserCorpus plans every positive parser test case with a resolver
// that knows every image: each must plan, with steps for every instruction
// of the target.
func TestParserCorpus(t *testing.T) {
	files, err := filepath.Glob("../parser/testdata/*/Dockerfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no parser testdata: %v", err)
	}
	resolveAll := func(_ context.Context, ref string, _ v1.Platform) (*ImageInfo, error) {
		return &ImageInfo{Ref: ref, Config: &v1.ConfigFile{}}, nil
	}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f)), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			df, err := parser.Parse(bytes.NewReader(data), "Dockerfile")
			if err != nil {
				t.Fatal(err)
			}
			p, err := New(t.Context(), df, Options{ResolveImage: resolveAll, BuildArgs: map[string]*string{"TAG": str("1")}})
			if err != nil {
				var pe *parser.Error
				if !errors.As(err, &pe) {
					t.Fatalf("error %v is not a *parser.Error", err)
				}
				t.Fatalf("New: %v", err)
			}
			last := df.Stages[len(df.Stages)-1]
			if got, want := len(p.Target.Steps), len(last.Commands); got != want {
				t.Errorf("target has %d steps, want %d", got, want)
			}
		})
	}
}
