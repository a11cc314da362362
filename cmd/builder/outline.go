package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/builder-dev/builder/parser"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// The results of --call outline and --call targets, as BuildKit's
// subrequests return them (frontend/subrequests/outline and targets):
// format=json prints this JSON, the text form is buildx's.

type outlineResult struct {
	Name        string          `json:"name,omitempty"`
	Description string          `json:"description,omitempty"`
	Args        []outlineArg    `json:"args,omitempty"`
	Secrets     []outlineSecret `json:"secrets,omitempty"`
	SSH         []outlineSecret `json:"ssh,omitempty"`
	Sources     [][]byte        `json:"sources,omitempty"`
}

type outlineArg struct {
	Name        string        `json:"name"`
	Description string        `json:"description,omitempty"`
	Value       string        `json:"value,omitempty"`
	Location    *locationJSON `json:"location,omitempty"`
}

type outlineSecret struct {
	Name     string        `json:"name"`
	Required bool          `json:"required,omitempty"`
	Location *locationJSON `json:"location,omitempty"`
}

type targetsResult struct {
	Targets []target `json:"targets"`
	Sources [][]byte `json:"sources"`
}

type target struct {
	Name        string        `json:"name,omitempty"`
	Default     bool          `json:"default,omitempty"`
	Description string        `json:"description,omitempty"`
	Base        string        `json:"base,omitempty"`
	Platform    string        `json:"platform,omitempty"`
	Location    *locationJSON `json:"location,omitempty"`
}

func toLocation(rs []bkparser.Range) *locationJSON {
	if len(rs) == 0 {
		return nil
	}
	l := toLocationJSON(rs)
	return &l
}

// runOutline is --call outline: the build args the target's stages use
// (with this build's values and the comments above their ARGs), the
// secrets and SSH agents their RUN steps mount.
func runOutline(ctx context.Context, a *app, f *buildFlags, call callFunc, contextDir string, in checkInput) error {
	if in.err != nil {
		return in.err
	}
	plan, err := planOnly(ctx, a, f, contextDir, in, false)
	if err != nil {
		return err
	}
	o := plan.Outline
	res := outlineResult{Name: o.Name, Description: o.Description, Sources: [][]byte{in.source}}
	for _, x := range o.Args {
		res.Args = append(res.Args, outlineArg{Name: x.Name, Description: x.Description, Value: x.Value, Location: toLocation(x.Location)})
	}
	for _, x := range o.Secrets {
		res.Secrets = append(res.Secrets, outlineSecret{Name: x.ID, Required: x.Required, Location: toLocation(x.Location)})
	}
	for _, x := range o.SSH {
		res.SSH = append(res.SSH, outlineSecret{Name: x.ID, Required: x.Required, Location: toLocation(x.Location)})
	}
	if call.json {
		return writeJSON(a.stdout, res)
	}
	return printOutline(a.stdout, res)
}

// printOutline prints an outline as buildx does.
func printOutline(w io.Writer, o outlineResult) error {
	if o.Name != "" || o.Description != "" {
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		name := o.Name
		if name == "" {
			name = "(default)"
		}
		fmt.Fprintf(tw, "TARGET:\t%s\n", name)
		if o.Description != "" {
			fmt.Fprintf(tw, "DESCRIPTION:\t%s\n", o.Description)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	if len(o.Args) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		fmt.Fprint(tw, "BUILD ARG\tVALUE\tDESCRIPTION\n")
		for _, x := range o.Args {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", x.Name, x.Value, x.Description)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	for _, part := range []struct {
		title string
		list  []outlineSecret
	}{{"SECRET", o.Secrets}, {"SSH", o.SSH}} {
		if len(part.list) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		fmt.Fprintf(tw, "%s\tREQUIRED\n", part.title)
		for _, x := range part.list {
			req := ""
			if x.Required {
				req = "true"
			}
			fmt.Fprintf(tw, "%s\t%s\n", x.Name, req)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	return nil
}

// runTargets is --call targets: every stage of the Dockerfile, with the
// comment above its FROM, its base and platform as written; the last is
// the default.
func runTargets(w io.Writer, call callFunc, in checkInput) error {
	if in.err != nil {
		return in.err
	}
	res := targetsResult{Targets: targetsOf(in.df), Sources: [][]byte{in.source}}
	if call.json {
		return writeJSON(w, res)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprint(tw, "TARGET\tDESCRIPTION\n")
	for _, t := range res.Targets {
		name := t.Name
		switch {
		case name == "" && t.Default:
			name = "(default)"
		case t.Default:
			name += " (default)"
		}
		fmt.Fprintf(tw, "%s\t%s\n", name, t.Description)
	}
	return tw.Flush()
}

func targetsOf(df *parser.Dockerfile) []target {
	out := make([]target, 0, len(df.Stages))
	for i, s := range df.Stages {
		out = append(out, target{
			Name: s.Name, Description: s.DocComment, Default: i == len(df.Stages)-1,
			Base: s.BaseName, Platform: s.Platform, Location: toLocation(s.Location),
		})
	}
	return out
}
