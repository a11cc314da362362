package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/executor"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// historyRow is one entry of `builder history`, newest first.
type historyRow struct {
	Layer     string            `json:"layer,omitempty"` // layer digest; empty for <empty> entries
	Created   *time.Time        `json:"created,omitempty"`
	CreatedBy string            `json:"created_by"`
	Size      int64             `json:"size"`
	Comment   string            `json:"comment,omitempty"`
	Cache     string            `json:"cache,omitempty"`  // hit, miss, or "" when not from a recorded build
	Reason    string            `json:"reason,omitempty"` // why it missed
	Line      int               `json:"line,omitempty"`
	Key       string            `json:"key,omitempty"`
	Inputs    *cache.Inputs     `json:"inputs,omitempty"`
	Extra     map[string]string `json:"-"`
}

func cmdHistory(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "history", "[OPTIONS] IMAGE")
	noTrunc := fs.Bool("no-trunc", false, "don't truncate output")
	format := fs.String("format", "table", "table or json")
	platform := fs.String("platform", "", "the platform's image of a multi-platform image (default: the host's)")
	st, err := a.setup(fs, args, 1, 1)
	if err != nil {
		return err
	}
	defer st.Close()
	p, err := platformFlag(*platform)
	if err != nil {
		return err
	}
	var img v1.Image
	if p != nil {
		img, err = st.images.ImageFor(ctx, fs.Arg(0), *p)
	} else {
		img, err = st.images.Describe(ctx, fs.Arg(0))
	}
	if err != nil {
		return err
	}
	rows, err := historyRows(ctx, st, img)
	if err != nil {
		return err
	}
	switch *format {
	case "json":
		return writeJSON(a.stdout, rows)
	case "table":
		return printHistory(a, rows, *noTrunc)
	}
	return fmt.Errorf("--format %q: want table or json", *format)
}

// historyRows pairs the config's history with the manifest's layers and with
// the build record that produced the image, newest first.
func historyRows(ctx context.Context, st *stores, img v1.Image) ([]historyRow, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	rec, _ := st.cache.BuildForImage(ctx, d.String())
	rows := make([]historyRow, 0, len(cfg.History))
	li := 0
	for i, h := range cfg.History {
		r := historyRow{CreatedBy: h.CreatedBy, Comment: h.Comment}
		if !h.Created.IsZero() {
			t := h.Created.Time
			r.Created = &t
		}
		if !h.EmptyLayer && li < len(m.Layers) {
			if li < len(cfg.RootFS.DiffIDs) {
				r.Layer = cfg.RootFS.DiffIDs[li].String()
			}
			r.Size = m.Layers[li].Size
			li++
		}
		if rec != nil && i < len(rec.History) && rec.History[i] >= 0 && rec.History[i] < len(rec.Steps) {
			s := rec.Steps[rec.History[i]]
			r.Cache, r.Reason, r.Line, r.Key, r.Inputs = s.Cache, s.Reason, s.Line, s.Key.String(), s.Inputs
		}
		rows = append(rows, r)
	}
	for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
		rows[i], rows[j] = rows[j], rows[i]
	}
	return rows, nil
}

func printHistory(a *app, rows []historyRow, noTrunc bool) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tCREATED\tCREATED BY\tSIZE\tCACHE\tCOMMENT")
	for _, r := range rows {
		layer := "<empty>"
		if r.Layer != "" {
			layer = r.Layer
			if !noTrunc {
				layer = shortID(layer)
			}
		}
		created := "N/A"
		if r.Created != nil {
			created = ago(*r.Created)
		}
		by := strings.ReplaceAll(r.CreatedBy, "\n", " ")
		if !noTrunc && len(by) > 45 {
			by = by[:44] + "…"
		}
		cacheCol := r.Cache
		if (r.Cache == "miss" || r.Cache == "hit") && r.Reason != "" {
			cacheCol = r.Cache + ": " + r.Reason // why it ran, or where its layer came from
		}
		if cacheCol == "" || cacheCol == executor.CacheNone {
			cacheCol = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", layer, created, by, humanSize(r.Size), cacheCol, r.Comment)
	}
	return tw.Flush()
}
