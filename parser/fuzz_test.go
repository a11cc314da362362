package parser

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/fuzztest"
)

// FuzzParse parses arbitrary bytes: no panic (Parse recovers buildkit's
// panics into an "internal parser error", which fails here too), every
// error is a *parser.Error, a parsed Dockerfile has stages, every command
// reparses, Lint works on it, and each input is parsed in bounded time and
// allocation. Seeds: the parser's test cases and testdata/fuzz/FuzzParse
// (see TestFuzzSeeds).
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
	bounds := fuzztest.Bounds{Timeout: 5 * time.Second, Grace: 3 * time.Second, MaxAlloc: 256 << 20}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzztest.Run(t, bounds, func(context.Context) { fuzzParseOne(t, data) })
	})
}

func fuzzParseOne(t *testing.T, data []byte) {
	df, err := Parse(bytes.NewReader(data), "Dockerfile")
	if err != nil {
		var pe *Error
		if !errors.As(err, &pe) {
			t.Fatalf("error %T is not a *parser.Error: %v", err, err)
		}
		if strings.Contains(err.Error(), "internal parser error") {
			t.Fatalf("Parse recovered a panic: %v", err)
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
	ldf, lint, err := ParseLint(bytes.NewReader(data), "Dockerfile", LintOptions{})
	if err != nil {
		var pe *Error
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), "check options") {
			t.Fatalf("ParseLint failed where Parse did not: %v", err)
		}
		return
	}
	if len(ldf.Stages) != len(df.Stages) || lint == nil {
		t.Fatalf("ParseLint: %d stages (lint %v), Parse: %d", len(ldf.Stages), lint, len(df.Stages))
	}
	_ = lint.Err()
}
