package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/builder-dev/builder/exporter"
	"github.com/builder-dev/builder/internal/attest"
	"github.com/builder-dev/builder/planner"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// The SBOM scanner is a separate program, builder-sbom, run as BuildKit
// runs its generator image (the scanning protocol of BuildKit's
// docs/attestations/sbom-protocol.md): it scans the directories
// $BUILDKIT_SCAN_SOURCE (the image) and $BUILDKIT_SCAN_SOURCE_EXTRAS/*
// (stages, the context) with syft and writes one in-toto statement per
// target into $BUILDKIT_SCAN_DESTINATION. It is separate because syft
// and its dependencies are about five times builder's own size.
const (
	scannerName    = "builder-sbom"
	scannerEnv     = "BUILDER_SBOM_SCANNER"
	sbomScanStage  = "BUILDKIT_SBOM_SCAN_STAGE"
	sbomScanContxt = "BUILDKIT_SBOM_SCAN_CONTEXT"
)

// findScanner is $BUILDER_SBOM_SCANNER, else builder-sbom beside the
// builder binary, else on PATH.
func findScanner() (string, error) {
	if p := os.Getenv(scannerEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("--sbom needs the SBOM scanner %s: $%s: %w", scannerName, scannerEnv, err)
		}
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), scannerName)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(scannerName); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("--sbom needs the SBOM scanner %s (make sbom builds it as bin/%s, beside bin/builder): not found beside the builder binary, on PATH or in $%s", scannerName, scannerName, scannerEnv)
}

// scanSBOM scans the image (and the stages and context the Dockerfile
// asks for with BUILDKIT_SBOM_SCAN_STAGE and BUILDKIT_SBOM_SCAN_CONTEXT)
// and returns the SBOM attestations, the image's first, with what places
// the image's files in its layers.
func scanSBOM(ctx context.Context, b attestBuild) ([]attest.Attestation, *layerFinder, error) {
	scanner, err := findScanner()
	if err != nil {
		return nil, nil, err
	}
	scratch, err := b.st.cache.ScratchDir()
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp(scratch, "sbom-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	src, extras, out := filepath.Join(dir, "core", "sbom"), filepath.Join(dir, "extras"), filepath.Join(dir, "out")
	for _, d := range []string{extras, out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, nil, err
		}
	}
	if err := exporter.WriteLocal(ctx, src, filesImage(b.res.Image, b.res.WindowsLayers)); err != nil {
		return nil, nil, fmt.Errorf("sbom: %w", err)
	}
	if err := b.scanExtras(ctx, extras); err != nil {
		return nil, nil, err
	}
	b.notice("scanning the image for its SBOM with " + scanner)
	cmd := exec.CommandContext(ctx, scanner)
	cmd.Env = append(os.Environ(), "BUILDKIT_SCAN_SOURCE="+src, "BUILDKIT_SCAN_DESTINATION="+out, "BUILDKIT_SCAN_SOURCE_EXTRAS="+extras)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return nil, nil, fmt.Errorf("sbom scanner %s: %v\n%s", scanner, err, strings.TrimSpace(stderr.String()))
	}
	atts, err := readScans(out)
	if err != nil {
		return nil, nil, err
	}
	layers, err := newLayerFinder(b.res.Image)
	if err != nil {
		return nil, nil, err
	}
	return atts, layers, nil
}

// scanExtras places the other targets in dir: sbom-STAGE for each stage
// (built for the target, not the target itself) whose
// BUILDKIT_SBOM_SCAN_STAGE is true or names it, sbom-context for the
// build context when the target's BUILDKIT_SBOM_SCAN_CONTEXT is.
func (b attestBuild) scanExtras(ctx context.Context, dir string) error {
	target := b.plan.Target
	if b.argEnabled(target, sbomScanContxt) {
		if err := os.Symlink(b.in.dir, filepath.Join(dir, "sbom-context")); err != nil {
			return err
		}
	}
	for _, st := range b.plan.Stages {
		if st == target || !b.argEnabled(st, sbomScanStage) {
			continue
		}
		layers, err := b.stageLayers(ctx, st)
		if err != nil {
			return fmt.Errorf("sbom of stage %s: %w", stageName(st), err)
		}
		if err := exporter.WriteLayers(ctx, filepath.Join(dir, "sbom-"+stageName(st)), layers); err != nil {
			return fmt.Errorf("sbom of stage %s: %w", stageName(st), err)
		}
	}
	return nil
}

// argEnabled evaluates a scan argument for a stage as BuildKit does: the
// global ARG's value, then each ARG of the stage (and of the stages it
// is built on), --build-arg overriding a declared one; true, or a comma
// list of stage names naming this one.
func (b attestBuild) argEnabled(st *planner.Stage, name string) bool {
	args := buildArgMap(b.f.buildArgs)
	value := func(def *string) (string, bool) {
		if v := args[name]; v != nil {
			return *v, true
		}
		if def != nil {
			return *def, true
		}
		return "", false
	}
	enabled := func(v string) bool {
		if on, err := strconv.ParseBool(v); err == nil {
			return on
		}
		for _, s := range strings.Split(v, ",") {
			if s == stageName(st) {
				return true
			}
		}
		return false
	}
	on := false
	for _, ma := range b.metaArgs() {
		for _, kv := range ma.Args {
			if kv.Key == name {
				if v, ok := value(kv.Value); ok {
					on = enabled(v)
				}
			}
		}
	}
	for _, s := range stageChain(st) {
		for _, step := range s.Steps {
			arg, ok := step.Cmd.(*instructions.ArgCommand)
			if !ok {
				continue
			}
			for _, kv := range arg.Args {
				if kv.Key == name {
					if v, ok := value(kv.Value); ok {
						on = enabled(v)
					}
				}
			}
		}
	}
	return on
}

// metaArgs are the Dockerfile's ARGs before its first FROM.
func (b attestBuild) metaArgs() []instructions.ArgCommand {
	if b.df == nil {
		return nil
	}
	return b.df.MetaArgs
}

// stageChain is st and the stages it is built on, the first base first.
func stageChain(st *planner.Stage) []*planner.Stage {
	var out []*planner.Stage
	for s := st; s != nil; s = s.Base.Stage {
		out = append([]*planner.Stage{s}, out...)
	}
	return out
}

// stageLayers are the layers of a stage's result: its base image's, then
// those its steps made (from the build record).
func (b attestBuild) stageLayers(ctx context.Context, st *planner.Stage) ([]v1.Layer, error) {
	var layers []v1.Layer
	steps := recordSteps(b.res.Record)
	for _, s := range stageChain(st) {
		if img := s.Base.Image; img != nil && img.Ref != "scratch" && s.Base.Stage == nil {
			base, err := b.st.images.Image(ctx, img.Digest)
			if err != nil {
				return nil, err
			}
			ls, err := base.Layers()
			if err != nil {
				return nil, err
			}
			layers = append(layers, ls...)
		}
		// A stage FROM a named directory context: the context's layer is
		// its FROM's.
		if rs := steps[recStepKey{stageName(s), s.Text, s.Line}]; rs != nil && rs.Layer != "" {
			l, err := exporter.LayerFromStore(ctx, b.st.layers, rs.Layer, rs.Size)
			if err != nil {
				return nil, err
			}
			layers = append(layers, l)
		}
		for _, step := range s.Steps {
			rs := steps[recStepKey{stageName(s), step.Text, step.Line}]
			if rs == nil || rs.Layer == "" {
				continue
			}
			l, err := exporter.LayerFromStore(ctx, b.st.layers, rs.Layer, rs.Size)
			if err != nil {
				return nil, err
			}
			layers = append(layers, l)
		}
	}
	return layers, nil
}

// readScans reads the scanner's statements: the image's (sbom.spdx.json)
// first, then the others by name, as BuildKit orders them.
func readScans(dir string) ([]attest.Attestation, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(entries, func(i, j int) bool {
		return entries[i].Name() == "sbom.spdx.json" && entries[j].Name() != "sbom.spdx.json"
	})
	var out []attest.Attestation
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var s attest.Statement
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, fmt.Errorf("sbom scanner output %s: %w", e.Name(), err)
		}
		if s.PredicateType != attest.PredicateSPDX || len(s.Predicate) == 0 {
			return nil, fmt.Errorf("sbom scanner output %s: predicate type %q, want %s", e.Name(), s.PredicateType, attest.PredicateSPDX)
		}
		out = append(out, attest.Attestation{PredicateType: s.PredicateType, Predicate: s.Predicate, Path: e.Name()})
	}
	if len(out) == 0 || out[0].Path != "sbom.spdx.json" {
		return nil, fmt.Errorf("sbom scanner wrote no sbom.spdx.json for the image")
	}
	return out, nil
}

// layerFinder knows, for every path of an image, the index of the top
// layer that creates it (whiteouts aside), as BuildKit places the files
// of an SBOM.
type layerFinder struct {
	layer map[string]int
}

func newLayerFinder(img v1.Image) (*layerFinder, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	f := &layerFinder{layer: map[string]int{}}
	for i := len(layers) - 1; i >= 0; i-- {
		if err := f.list(layers[i], i); err != nil {
			return nil, fmt.Errorf("sbom: layer %d: %w", i, err)
		}
	}
	return f, nil
}

func (f *layerFinder) list(l v1.Layer, i int) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := path.Join("/", h.Name)
		if strings.HasPrefix(path.Base(p), ".wh.") {
			continue
		}
		if _, ok := f.layer[p]; !ok {
			f.layer[p] = i
		}
	}
}

// supplement is the image's SBOM with BuildKit's layer comments, the
// layers named by their digests in img (the image as an output writes
// it), and tool among the creators.
func (f *layerFinder) supplement(img v1.Image, a attest.Attestation, tool string) (attest.Attestation, error) {
	m, err := img.Manifest()
	if err != nil {
		return a, err
	}
	doc, err := attest.SupplementSPDX(a.Predicate, func(p string) (string, bool) {
		i, ok := f.layer[p]
		if !ok || i >= len(m.Layers) {
			return "", false
		}
		return m.Layers[i].Digest.String(), true
	}, tool)
	if err != nil {
		return a, err
	}
	a.Predicate = doc
	return a, nil
}
