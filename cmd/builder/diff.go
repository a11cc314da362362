package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/executor"
	"github.com/builder-dev/builder/internal/imagediff"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// diffSide is one side of `builder diff`: an image, or a build record and
// the image it made (when it is still in the store).
type diffSide struct {
	Ref     string `json:"ref"`
	Kind    string `json:"kind"` // "image" or "build"
	BuildID string `json:"buildID,omitempty"`
	Digest  string `json:"digest,omitempty"`
	// Note says why there is no image to compare.
	Note string `json:"note,omitempty"`

	rec   *cache.BuildRecord
	img   v1.Image
	label string // what the side is, when not just a build or an image
}

// diffReport is what `builder diff` prints.
type diffReport struct {
	A     diffSide               `json:"a"`
	B     diffSide               `json:"b"`
	Steps []imagediff.StepChange `json:"steps,omitempty"`
	Image *imagediff.ImageDiff   `json:"image,omitempty"`
}

// differs reports whether the report found any difference.
func (r *diffReport) differs() bool {
	for _, s := range r.Steps {
		if s.Status != "same" {
			return true
		}
	}
	return r.Image != nil && !r.Image.Identical
}

func cmdDiff(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "diff", "[OPTIONS] A B  (each an image, docker-image://REF, a build ID or prefix, or latest)")
	format := fs.String("format", "table", "table or json")
	maxFiles := fs.Int("max-files", 50, "files listed per layer in table format (0: all)")
	st, err := a.setup(fs, args, 2, 2)
	if err != nil {
		return err
	}
	defer st.Close()
	if *format != "table" && *format != "json" {
		return fmt.Errorf("--format %q: want table or json", *format)
	}
	sa, err := resolveDiffSide(ctx, a, st, fs.Arg(0))
	if err != nil {
		return err
	}
	sb, err := resolveDiffSide(ctx, a, st, fs.Arg(1))
	if err != nil {
		return err
	}
	rep, err := diffSides(ctx, sa, sb)
	if err != nil {
		return err
	}
	if *format == "json" {
		return writeJSON(a.stdout, rep)
	}
	printDiff(a.stdout, rep, *maxFiles)
	return nil
}

// resolveDiffSide reads one argument of diff: docker-image://REF (the
// store's, pulled when missing), a build record (ID, unique ID prefix or
// latest), else an image of the store.
func resolveDiffSide(ctx context.Context, a *app, st *stores, ref string) (*diffSide, error) {
	if r, ok := strings.CutPrefix(ref, "docker-image://"); ok {
		img, err := st.images.Image(ctx, r)
		if errors.Is(err, cache.ErrNotFound) {
			img, err = pullImage(ctx, st, r, hostPlatform(), a.remoteOptions(hostPlatform(), a.progressLines()), true)
		}
		if err != nil {
			return nil, err
		}
		return imageSide(ref, img)
	}
	if !strings.ContainsAny(ref, ":/@") {
		rec, err := st.cache.FindBuild(ctx, ref)
		if err == nil {
			return buildSide(ctx, st, ref, rec), nil
		}
		if !errors.Is(err, cache.ErrNotFound) {
			return nil, err
		}
	}
	img, err := st.images.Image(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("%s is neither a build record nor an image of the store: %w", ref, err)
	}
	return imageSide(ref, img)
}

func imageSide(ref string, img v1.Image) (*diffSide, error) {
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	return &diffSide{Ref: ref, Kind: "image", Digest: d.String(), img: img}, nil
}

func buildSide(ctx context.Context, st *stores, ref string, rec *cache.BuildRecord) *diffSide {
	s := &diffSide{Ref: ref, Kind: "build", BuildID: rec.ID, Digest: rec.ImageDigest, rec: rec}
	switch {
	case rec.ImageDigest == "":
		s.Note = "the build made no image (" + buildStatus(rec) + ")"
	default:
		img, err := st.images.Image(ctx, rec.ImageDigest)
		if err != nil {
			s.Note = fmt.Sprintf("its image is no longer in the store: %v", err)
		} else {
			s.img = img
		}
	}
	return s
}

// diffSides compares two sides: the steps when both are builds, the
// images when both have one.
func diffSides(ctx context.Context, a, b *diffSide) (*diffReport, error) {
	rep := &diffReport{A: *a, B: *b}
	if a.rec != nil && b.rec != nil {
		rep.Steps = imagediff.DiffSteps(a.rec.Steps, b.rec.Steps, executor.ExplainStep)
	}
	if a.img != nil && b.img != nil {
		d, err := imagediff.DiffImages(ctx, a.img, b.img)
		if err != nil {
			return nil, err
		}
		rep.Image = d
	}
	return rep, nil
}

// printDiff renders a diff report for people: the steps that changed and
// why, then each layer's files and the config fields that differ.
func printDiff(w io.Writer, r *diffReport, maxFiles int) {
	for _, s := range []struct {
		name string
		side diffSide
	}{{"A", r.A}, {"B", r.B}} {
		fmt.Fprintf(w, "%s: %s\n", s.name, sideLine(s.side))
	}
	if !r.differs() {
		fmt.Fprintln(w, "\nNo differences.")
		return
	}
	if changed := changedSteps(r.Steps); len(changed) > 0 {
		fmt.Fprintln(w, "\nSteps:")
		for _, s := range changed {
			line := s.LineB
			if line == 0 {
				line = s.LineA
			}
			text := s.Status
			if s.Reason != "" {
				text += ": " + s.Reason
			}
			fmt.Fprintf(w, "  line %-3d %s\n           %s\n", line, clipText(oneLine(s.Name), 70), text)
		}
	}
	if r.Image == nil || r.Image.Identical {
		return
	}
	if imagediff.Changed(r.Image.Layers) {
		fmt.Fprintln(w, "\nLayers:")
		for _, l := range r.Image.Layers {
			if l.Status != "same" {
				printLayer(w, l, maxFiles)
			}
		}
	}
	if len(r.Image.Config) > 0 {
		fmt.Fprintln(w, "\nConfig:")
		for _, f := range r.Image.Config {
			fmt.Fprintf(w, "  %s: %s → %s\n", f.Field, clipText(oneLine(f.A), 60), clipText(oneLine(f.B), 60))
		}
	}
	if len(r.Image.Manifest) > 0 {
		fmt.Fprintln(w, "\nManifest (same config and layer contents):")
		for _, f := range r.Image.Manifest {
			fmt.Fprintf(w, "  %s: %s → %s\n", f.Field, f.A, f.B)
		}
	}
}

func sideLine(s diffSide) string {
	var out string
	switch {
	case s.label != "":
		out = s.label
	case s.Kind == "build":
		out = "build " + s.BuildID
	default:
		out = s.Ref
	}
	if s.Digest != "" {
		out += " (image " + s.Digest + ")"
	}
	if s.Note != "" {
		out += "; " + s.Note
	}
	return out
}

func changedSteps(steps []imagediff.StepChange) []imagediff.StepChange {
	var out []imagediff.StepChange
	for _, s := range steps {
		if s.Status != "same" {
			out = append(out, s)
		}
	}
	return out
}

func printLayer(w io.Writer, l imagediff.LayerChange, maxFiles int) {
	idx := fmt.Sprintf("%d", l.IndexB)
	if l.IndexA != l.IndexB {
		idx = fmt.Sprintf("%d→%d", l.IndexA, l.IndexB)
	}
	fmt.Fprintf(w, "  layer %s %s: %s", idx, l.Status, clipText(oneLine(l.CreatedBy), 70))
	if l.DiffIDA != "" && l.DiffIDB != "" {
		fmt.Fprintf(w, " (%s → %s)", shortDigest(l.DiffIDA), shortDigest(l.DiffIDB))
	}
	fmt.Fprintln(w)
	for i, f := range l.Files {
		if maxFiles > 0 && i == maxFiles {
			fmt.Fprintf(w, "    … and %d more files\n", len(l.Files)-maxFiles)
			break
		}
		fmt.Fprintf(w, "    %-8s %s%s\n", f.Change, f.Path, fileDetail(f))
	}
}

// fileDetail says how a file changed: each field's two values.
func fileDetail(f imagediff.FileChange) string {
	if f.Change != "changed" {
		return " (" + f.Type + ")"
	}
	var parts []string
	for _, c := range f.Fields {
		a, b := c.A, c.B
		if c.Field == "digest" {
			a, b = shortDigest(a), shortDigest(b)
		}
		parts = append(parts, fmt.Sprintf("%s %s → %s", c.Field, clipText(a, 40), clipText(b, 40)))
	}
	return ": " + strings.Join(parts, ", ")
}
