package parser

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func FuzzParse(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*/Dockerfile")
	if err != nil {
		f.Fatal(err)
	}
	neg, err := filepath.Glob("testdata/negative/*/Dockerfile")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range append(seeds, neg...) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		df, err := Parse(bytes.NewReader(data), "Dockerfile")
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *parser.Error: %v", err, err)
			}
			return
		}
		if len(df.Stages) == 0 {
			t.Fatal("Parse succeeded without stages")
		}
		for _, st := range df.Stages {
			for _, c := range st.Commands {
				if _, err := df.Reparse(c); err != nil {
					t.Fatalf("Reparse %s: %v", c.Name(), err)
				}
			}
		}
	})
}
