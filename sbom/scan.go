package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/format/spdxjson"
	"github.com/anchore/syft/syft/source"
	"github.com/anchore/syft/syft/source/directorysource"
	_ "modernc.org/sqlite" // the driver syft's RPM cataloger reads newer rpmdb with, as syft's CLI
)

// The protocol's variables.
const (
	envDestination  = "BUILDKIT_SCAN_DESTINATION"
	envSource       = "BUILDKIT_SCAN_SOURCE"
	envSourceExtras = "BUILDKIT_SCAN_SOURCE_EXTRAS"
)

// target is one filesystem to scan, named after its directory.
type target struct{ name, dir string }

// run scans the protocol's targets (getenv reads its variables) and
// writes their statements.
func run(ctx context.Context, getenv func(string) string) error {
	dest, src := getenv(envDestination), getenv(envSource)
	if dest == "" || src == "" {
		return fmt.Errorf("%s and %s must be set (BuildKit's SBOM scanning protocol)", envDestination, envSource)
	}
	targets, err := targetsOf(src, getenv(envSourceExtras))
	if err != nil {
		return err
	}
	for _, t := range targets {
		stmt, err := scan(ctx, t)
		if err != nil {
			return fmt.Errorf("scan %s: %w", t.name, err)
		}
		if err := os.WriteFile(filepath.Join(dest, t.name+".spdx.json"), stmt, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// targetsOf is the source, then each directory of extras (none when
// extras is unset or missing, as the protocol says).
func targetsOf(src, extras string) ([]target, error) {
	out := []target{{name: filepath.Base(src), dir: src}}
	if extras == "" {
		return out, nil
	}
	entries, err := os.ReadDir(extras)
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		out = append(out, target{name: e.Name(), dir: filepath.Join(extras, e.Name())})
	}
	return out, nil
}

// statement is the in-toto statement a scan is written as.
type statement struct {
	Type          string          `json:"_type"`
	PredicateType string          `json:"predicateType"`
	Subject       []any           `json:"subject"`
	Predicate     json.RawMessage `json:"predicate"`
}

// scan makes the SPDX JSON SBOM of one target with syft's defaults for a
// directory (OS package databases, language lockfiles and manifests,
// binaries' build information), the directory taken as a root
// filesystem: its absolute symlinks resolve inside it.
func scan(ctx context.Context, t target) ([]byte, error) {
	dir, err := filepath.EvalSymlinks(t.dir) // the context may be a link to it
	if err != nil {
		return nil, err
	}
	src, err := directorysource.New(directorysource.Config{Path: dir, Base: dir, Alias: source.Alias{Name: t.name}})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	s, err := syft.CreateSBOM(ctx, src, syft.DefaultCreateSBOMConfig())
	if err != nil {
		return nil, err
	}
	enc, err := spdxjson.NewFormatEncoderWithConfig(spdxjson.DefaultEncoderConfig())
	if err != nil {
		return nil, err
	}
	var doc bytes.Buffer
	if err := enc.Encode(&doc, *s); err != nil {
		return nil, err
	}
	return json.Marshal(statement{
		Type:          "https://in-toto.io/Statement/v1",
		PredicateType: "https://spdx.dev/Document",
		Subject:       []any{},
		Predicate:     bytes.TrimSpace(doc.Bytes()),
	})
}
