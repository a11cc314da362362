package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/builder-dev/builder/internal/attest"
	"github.com/builder-dev/builder/parser"
	"github.com/builder-dev/builder/planner"
)

// Which targets an SBOM scans besides the image, as BuildKit decides
// (testSBOMScannerArgs): the stages built for the target whose
// BUILDKIT_SBOM_SCAN_STAGE (a global ARG, an ARG of the stage or of a
// stage it is built on; --build-arg overrides a declared one) is true or
// names them, and the context when the target's BUILDKIT_SBOM_SCAN_CONTEXT
// is; a --build-arg alone declares nothing.
func TestSBOMScanTargets(t *testing.T) {
	const withArgs = "ARG BUILDKIT_SBOM_SCAN_CONTEXT=true\nFROM scratch AS file\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY f /file\n" +
		"FROM scratch AS base\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY --from=file /file /foo\n" +
		"FROM scratch AS base2\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY --from=file /file /bar\n" +
		"FROM base\nARG BUILDKIT_SBOM_SCAN_STAGE=true\n"
	for _, tc := range []struct {
		name, dockerfile string
		buildArgs        []string
		want             []string // scanned stages, "context" for the context
	}{
		{"build args alone", "FROM scratch AS base\nCOPY f /foo\nFROM base\n", []string{"BUILDKIT_SBOM_SCAN_CONTEXT=true", "BUILDKIT_SBOM_SCAN_STAGE=true"}, nil},
		{"declared", withArgs, nil, []string{"context", "file", "base"}},
		{"disabled by build args", withArgs, []string{"BUILDKIT_SBOM_SCAN_STAGE=false", "BUILDKIT_SBOM_SCAN_CONTEXT=false"}, nil},
		{"named stages", "ARG BUILDKIT_SBOM_SCAN_STAGE=file\nFROM scratch AS file\nCOPY f /file\nFROM scratch AS base\nCOPY --from=file /file /foo\nFROM base\n", nil, []string{"file"}},
		{"inherited from the base stage", "FROM scratch AS a\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY f /a\nFROM a AS b\nCOPY f /b\nFROM scratch\nCOPY --from=b /b /c\n", nil, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := planFor(t, tc.dockerfile, tc.buildArgs)
			var got []string
			if b.argEnabled(b.plan.Target, sbomScanContxt) {
				got = append(got, "context")
			}
			for _, st := range b.plan.Stages {
				if st != b.plan.Target && b.argEnabled(st, sbomScanStage) {
					got = append(got, stageName(st))
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("scanned %v, want %v", got, tc.want)
			}
		})
	}
}

func planFor(t *testing.T, dockerfile string, buildArgs []string) attestBuild {
	t.Helper()
	df, err := parser.Parse(strings.NewReader(dockerfile), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	f := &buildFlags{buildArgs: buildArgs}
	plan, err := planner.New(t.Context(), df, planner.Options{DockerfilePath: "Dockerfile", BuildArgs: buildArgMap(buildArgs),
		Platform: hostPlatform(), BuildPlatform: hostPlatform()})
	if err != nil {
		t.Fatal(err)
	}
	return attestBuild{f: f, plan: plan, df: df}
}

// The scanner's output as BuildKit orders it: the image's SBOM first.
func TestReadScans(t *testing.T) {
	dir := t.TempDir()
	stmt := func(name string) string {
		return `{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://spdx.dev/Document","subject":[],"predicate":{"name":"` + name + `"}}`
	}
	for name, body := range map[string]string{"sbom-a.spdx.json": stmt("sbom-a"), "sbom.spdx.json": stmt("sbom"), "sbom-context.spdx.json": stmt("sbom-context")} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	atts, err := readScans(dir)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, a := range atts {
		paths = append(paths, a.Path)
		if a.PredicateType != attest.PredicateSPDX || !strings.Contains(string(a.Predicate), strings.TrimSuffix(a.Path, ".spdx.json")) {
			t.Errorf("attestation %+v", a)
		}
	}
	if !slices.Equal(paths, []string{"sbom.spdx.json", "sbom-a.spdx.json", "sbom-context.spdx.json"}) {
		t.Errorf("order %v", paths)
	}
	os.Remove(filepath.Join(dir, "sbom.spdx.json"))
	if _, err := readScans(dir); err == nil || !strings.Contains(err.Error(), "no sbom.spdx.json") {
		t.Errorf("without the image's SBOM: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sbom.spdx.json"), []byte(`{"predicateType":"x","predicate":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readScans(dir); err == nil || !strings.Contains(err.Error(), `predicate type "x"`) {
		t.Errorf("a statement of another type: %v", err)
	}
}
