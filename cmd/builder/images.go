package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func cmdImages(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "images", "[OPTIONS]")
	quiet := fs.BoolP("quiet", "q", false, "only show image IDs")
	format := fs.String("format", "table", "table or json")
	st, err := a.setup(fs, args, 0, 0)
	if err != nil {
		return err
	}
	defer st.Close()
	// Damaged images are listed (marked) with the others, and their
	// errors, naming what is damaged and what to do, make the exit status.
	list, damaged := st.images.List(ctx)
	if list == nil && damaged != nil {
		return damaged
	}
	switch {
	case *format == "json":
		if err := json.NewEncoder(a.stdout).Encode(list); err != nil {
			return err
		}
		return damaged
	case *quiet:
		for _, im := range list {
			fmt.Fprintln(a.stdout, shortID(im.Digest))
		}
		return damaged
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\tPLATFORMS")
	for _, im := range list {
		tags := im.Tags
		if len(tags) == 0 {
			tags = []string{"<none>:<none>"}
		}
		plats := strings.Join(im.Platforms, ",")
		if plats == "" {
			plats = "-"
		}
		for _, t := range tags {
			repo, tag := splitTag(t)
			if im.Damaged != "" {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", repo, tag, shortID(im.Digest), "<damaged>", "-", "-")
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", repo, tag, shortID(im.Digest), ago(im.Created), humanSize(im.Size), plats)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return damaged
}

func cmdTag(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "tag", "SOURCE TARGET")
	st, err := a.setup(fs, args, 2, 2)
	if err != nil {
		return err
	}
	defer st.Close()
	return st.images.Tag(ctx, fs.Arg(0), fs.Arg(1))
}

func cmdRmi(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "rmi", "IMAGE [IMAGE...]")
	st, err := a.setup(fs, args, 1, -1)
	if err != nil {
		return err
	}
	defer st.Close()
	var failed []string
	for _, ref := range fs.Args() {
		if err := st.images.Remove(ctx, ref); err != nil {
			fmt.Fprintf(a.stderr, "Error: %v\n", err)
			failed = append(failed, ref)
			continue
		}
		fmt.Fprintf(a.stdout, "Untagged: %s\n", ref)
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not remove %s", strings.Join(failed, ", "))
	}
	return nil
}

func cmdSave(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "save", "-o FILE IMAGE [IMAGE...]")
	out := fs.StringP("output", "o", "", "write to FILE (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := needArgs(fs, 1, -1); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("save: -o FILE is required")
	}
	st, err := a.open()
	if err != nil {
		return err
	}
	defer st.Close()
	return st.images.Save(ctx, *out, fs.Args())
}

func cmdLoad(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "load", "-i FILE")
	in := fs.StringP("input", "i", "", "read from FILE (docker save or OCI layout tar)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := needArgs(fs, 0, 0); err != nil {
		return err
	}
	if *in == "" {
		return fmt.Errorf("load: -i FILE is required")
	}
	st, err := a.open()
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.lockShared(ctx); err != nil {
		return err
	}
	names, err := st.images.Load(ctx, *in)
	if err != nil {
		return err
	}
	for _, n := range names {
		fmt.Fprintf(a.stdout, "Loaded image: %s\n", n)
	}
	return nil
}

func cmdInspect(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "inspect", "IMAGE")
	att := fs.String("attestation", "", "print the image's in-toto statements of a type (provenance, sbom or a predicate type URI) as a JSON array")
	platform := fs.String("platform", "", "the platform's image of a multi-platform image (default: the host's)")
	st, err := a.setup(fs, args, 1, 1)
	if err != nil {
		return err
	}
	defer st.Close()
	if *att != "" {
		return printAttestations(ctx, a, st, fs.Arg(0), *att)
	}
	p, err := platformFlag(*platform)
	if err != nil {
		return err
	}
	info, err := st.images.Inspect(ctx, fs.Arg(0), p)
	if err != nil {
		return err
	}
	return writeJSON(a.stdout, info)
}

// platformFlag parses a --platform of a command that reads a stored
// image; "" is nil (the host's platform).
func platformFlag(s string) (*v1.Platform, error) {
	if s == "" {
		return nil, nil
	}
	p, err := targetPlatform(s)
	if err != nil {
		return nil, err
	}
	return &p, nil
}

func splitTag(t string) (repo, tag string) {
	i := strings.LastIndex(t, ":")
	if i < 0 || strings.Contains(t[i:], "/") {
		return t, "latest"
	}
	return t[:i], t[i+1:]
}

func shortID(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

func humanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.3g%cB", float64(n)/float64(div), "kMGTPE"[exp])
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "N/A"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return "Less than a minute ago"
	case d < time.Hour:
		return plural(int(d.Minutes()), "minute") + " ago"
	case d < 48*time.Hour:
		return plural(int(d.Hours()), "hour") + " ago"
	case d < 60*24*time.Hour:
		return plural(int(d.Hours()/24), "day") + " ago"
	}
	return t.Format("2006-01-02")
}
