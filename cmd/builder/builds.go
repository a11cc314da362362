package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/builder-dev/builder/cache"
)

// `builder builds` manages the build records: what each build was asked,
// what every step did and why, where the image went, and its log.

var buildsCommands = map[string]func(ctx context.Context, a *app, args []string) error{
	"ls":      cmdBuildsLs,
	"inspect": cmdBuildsInspect,
	"logs":    cmdBuildsLogs,
	"rm":      cmdBuildsRm,
	"export":  cmdBuildsExport,
}

func cmdBuilds(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(a.stderr, `Usage: builder builds COMMAND

Commands:
  ls        List build records (--format table|json, --filter KEY=VALUE)
  inspect   Show a build record: ID, a unique ID prefix, or latest
  logs      Print a build's progress output as it was printed
  rm        Remove build records
  export    Write a build record, its Dockerfile and its log to a tar file
`)
		if len(args) == 0 {
			return exitError{2}
		}
		return nil
	}
	run, ok := buildsCommands[args[0]]
	if !ok {
		return fmt.Errorf("builds: unknown command %q (want ls, inspect, logs, rm or export)", args[0])
	}
	return run(ctx, a, args[1:])
}

// buildFilter is one --filter of `builds ls`.
type buildFilter func(*cache.BuildRecord) bool

// parseBuildFilters reads --filter values: status=, target=, image= (a
// tag or a digest prefix), since= and until= (a duration ago or an RFC
// 3339 time).
func parseBuildFilters(vals []string, now time.Time) ([]buildFilter, error) {
	var out []buildFilter
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok || val == "" {
			return nil, fmt.Errorf("--filter %q: want KEY=VALUE", v)
		}
		var f buildFilter
		switch k {
		case "status":
			f = func(b *cache.BuildRecord) bool { return buildStatus(b) == val }
		case "target":
			f = func(b *cache.BuildRecord) bool { return b.Target == val }
		case "image":
			f = func(b *cache.BuildRecord) bool { return imageMatches(b, val) }
		case "since", "until":
			t, err := filterTime(val, now)
			if err != nil {
				return nil, fmt.Errorf("--filter %q: %w", v, err)
			}
			if k == "since" {
				f = func(b *cache.BuildRecord) bool { return !b.Started.Before(t) }
			} else {
				f = func(b *cache.BuildRecord) bool { return b.Started.Before(t) }
			}
		default:
			return nil, fmt.Errorf("--filter %q: unknown key %q (want status, target, image, since or until)", v, k)
		}
		out = append(out, f)
	}
	return out, nil
}

func filterTime(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (10m, 2h) nor an RFC 3339 time", v)
	}
	return t, nil
}

func imageMatches(b *cache.BuildRecord, v string) bool {
	if b.ImageDigest != "" && (strings.HasPrefix(b.ImageDigest, v) || strings.HasPrefix(strings.TrimPrefix(b.ImageDigest, "sha256:"), v)) {
		return true
	}
	for _, t := range b.Tags {
		if t == v || strings.TrimSuffix(t, ":latest") == v {
			return true
		}
	}
	return false
}

// buildStatus is the record's status; records of older builders have
// none: finished with an image is completed, otherwise failed.
func buildStatus(b *cache.BuildRecord) string {
	switch {
	case b.Status != "":
		return b.Status
	case b.ImageDigest != "":
		return cache.BuildCompleted
	}
	return cache.BuildFailed
}

// buildSummary is one row of `builds ls`.
type buildSummary struct {
	ID          string    `json:"id"`
	Started     time.Time `json:"started"`
	DurationMS  int64     `json:"durationMS"`
	Status      string    `json:"status"`
	Target      string    `json:"target,omitempty"`
	Context     string    `json:"context,omitempty"`
	StepsRun    int       `json:"stepsRun"`
	StepsCached int       `json:"stepsCached"`
	ImageDigest string    `json:"imageDigest,omitempty"`
	Tags        []string  `json:"tags,omitempty"`
	Error       string    `json:"error,omitempty"`
}

func summarize(b *cache.BuildRecord) buildSummary {
	s := buildSummary{ID: b.ID, Started: b.Started, Status: buildStatus(b), Target: b.Target,
		ImageDigest: b.ImageDigest, Tags: b.Tags, Error: b.Error}
	if !b.Finished.IsZero() {
		s.DurationMS = b.Finished.Sub(b.Started).Milliseconds()
	}
	if b.Request != nil {
		s.Context = b.Request.ContextDir
	}
	r := roiOf(b)
	s.StepsRun, s.StepsCached = r.run, r.reused
	return s
}

func cmdBuildsLs(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "builds ls", "[OPTIONS]")
	format := fs.String("format", "table", "table or json")
	var filters []string
	fs.StringArrayVar(&filters, "filter", nil, "filter: status=completed|failed|canceled, target=STAGE, image=TAG|DIGEST, since=DURATION|TIME, until=DURATION|TIME")
	noTrunc := fs.Bool("no-trunc", false, "don't truncate IDs")
	st, err := a.setup(fs, args, 0, 0)
	if err != nil {
		return err
	}
	defer st.Close()
	fl, err := parseBuildFilters(filters, time.Now())
	if err != nil {
		return err
	}
	all, err := st.cache.ListBuilds(ctx)
	if err != nil {
		return err
	}
	rows := []buildSummary{}
	for _, b := range all {
		keep := true
		for _, f := range fl {
			keep = keep && f(b)
		}
		if keep {
			rows = append(rows, summarize(b))
		}
	}
	switch *format {
	case "json":
		return writeJSON(a.stdout, rows)
	case "table":
	default:
		return fmt.Errorf("--format %q: want table or json", *format)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "BUILD ID\tSTARTED\tDURATION\tSTATUS\tTARGET\tSTEPS\tIMAGE")
	for _, r := range rows {
		id := r.ID
		if !*noTrunc {
			id = shortID(id)
		}
		dur := "-"
		if r.DurationMS > 0 {
			dur = fmt.Sprintf("%.1fs", float64(r.DurationMS)/1000)
		}
		target := r.Target
		if target == "" {
			target = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d run, %d cached\t%s\n", id, ago(r.Started), dur, r.Status, target, r.StepsRun, r.StepsCached, imageColumn(r))
	}
	return tw.Flush()
}

func imageColumn(r buildSummary) string {
	switch {
	case len(r.Tags) > 0:
		return strings.Join(r.Tags, ", ")
	case r.ImageDigest != "":
		return shortID(r.ImageDigest)
	}
	return "-"
}

// findBuild looks up the build named by ref (an ID, a unique ID prefix
// or "latest").
func findBuild(ctx context.Context, st *stores, ref string) (*cache.BuildRecord, error) {
	b, err := st.cache.FindBuild(ctx, ref)
	if errors.Is(err, cache.ErrNotFound) {
		return nil, fmt.Errorf("%w (builder builds ls lists the builds)", err)
	}
	return b, err
}

func cmdBuildsInspect(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "builds inspect", "[OPTIONS] ID|latest")
	format := fs.String("format", "table", "table or json")
	st, err := a.setup(fs, args, 1, 1)
	if err != nil {
		return err
	}
	defer st.Close()
	b, err := findBuild(ctx, st, fs.Arg(0))
	if err != nil {
		return err
	}
	switch *format {
	case "json":
		return writeJSON(a.stdout, b)
	case "table":
		return printBuild(a.stdout, b)
	}
	return fmt.Errorf("--format %q: want table or json", *format)
}

// printBuild shows a build record for people.
func printBuild(w io.Writer, b *cache.BuildRecord) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	field := func(k, format string, v ...any) { fmt.Fprintf(tw, "%s:\t%s\n", k, fmt.Sprintf(format, v...)) }
	field("ID", "%s", b.ID)
	field("Status", "%s", buildStatus(b))
	if b.Error != "" {
		field("Error", "%s", oneLine(b.Error))
	}
	field("Started", "%s (%s)", b.Started.Local().Format(time.RFC3339), strings.ToLower(ago(b.Started)))
	if !b.Finished.IsZero() {
		field("Duration", "%.1fs", b.Finished.Sub(b.Started).Seconds())
	}
	if b.Request != nil {
		printRequest(field, b.Request)
	}
	if b.Target != "" {
		field("Target", "%s", b.Target)
	}
	if b.ImageDigest != "" {
		field("Image", "%s", b.ImageDigest)
	}
	if len(b.Tags) > 0 {
		field("Tags", "%s", strings.Join(b.Tags, ", "))
	}
	for _, o := range b.Outputs {
		field("Output", "%s", outputLine(o))
	}
	for _, line := range roiOf(b).lines(b) {
		field("Cache", "%s", line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return printBuildSteps(w, b.Steps)
}

// printRequest prints what a build was asked, one field a line.
func printRequest(field func(k, format string, v ...any), r *cache.BuildRequest) {
	ctxLine := r.ContextDir
	if r.GitCommit != "" {
		ctxLine += " (git " + shortID(r.GitCommit) + ")"
	}
	field("Context", "%s", ctxLine)
	df := r.Dockerfile
	if r.DockerfileDigest != "" {
		df += " (" + shortDigest(r.DockerfileDigest) + ")"
	}
	field("Dockerfile", "%s", df)
	if len(r.Platforms) > 0 {
		field("Platform", "%s", strings.Join(r.Platforms, ", "))
	}
	for _, arg := range r.BuildArgs {
		field("Build arg", "%s", arg)
	}
	for _, s := range r.Secrets {
		field("Secret", "%s (value not recorded)", s)
	}
	for _, bc := range r.BuildContexts {
		field("Build context", "%s", bc)
	}
	if r.SourceDateEpoch != nil {
		field("SOURCE_DATE_EPOCH", "%d", *r.SourceDateEpoch)
	}
	for _, im := range r.BaseImages {
		field("Base image", "%s@%s", im.Ref, im.Digest)
	}
}

// printBuildSteps prints the table of a build's steps.
func printBuildSteps(w io.Writer, steps []cache.StepRecord) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LINE\tSTEP\tCACHE\tDURATION\tSIZE\tLAYER\tREASON")
	for _, s := range steps {
		name := s.Name
		if name == "" {
			name = s.Instruction
		}
		size, layer, hit := "-", "-", "-"
		if keyedStep(s) {
			hit = s.Cache
		}
		if s.Layer != "" {
			size, layer = humanSize(s.Size), shortID(s.Layer)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.1fs\t%s\t%s\t%s\n", s.Line, clipText(oneLine(name), 50), hit, float64(s.DurationMS)/1000, size, layer, s.Reason)
	}
	return tw.Flush()
}

func outputLine(o cache.BuildOutput) string {
	var parts []string
	parts = append(parts, "type="+o.Type)
	if o.Name != "" {
		parts = append(parts, "name="+o.Name)
	}
	if o.Dest != "" {
		parts = append(parts, "dest="+o.Dest)
	}
	s := strings.Join(parts, ",")
	if o.Digest != "" {
		s += " " + o.Digest
	}
	if o.LayersPushed+o.LayersSkipped > 0 {
		s += fmt.Sprintf(" (%d layers pushed, %d skipped)", o.LayersPushed, o.LayersSkipped)
	}
	return s
}

func shortDigest(d string) string {
	if alg, h, ok := strings.Cut(d, ":"); ok && len(h) > 12 {
		return alg + ":" + h[:12]
	}
	return d
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func clipText(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func cmdBuildsLogs(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "builds logs", "ID|latest")
	st, err := a.setup(fs, args, 1, 1)
	if err != nil {
		return err
	}
	defer st.Close()
	b, err := findBuild(ctx, st, fs.Arg(0))
	if err != nil {
		return err
	}
	data, err := st.cache.BuildLog(ctx, b.ID)
	if err != nil {
		return err
	}
	_, err = a.stdout.Write(data)
	return err
}

func cmdBuildsRm(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "builds rm", "ID [ID...]")
	st, err := a.setup(fs, args, 1, -1)
	if err != nil {
		return err
	}
	defer st.Close()
	var failed []string
	for _, ref := range fs.Args() {
		b, err := findBuild(ctx, st, ref)
		if err == nil {
			err = st.cache.RemoveBuild(ctx, b.ID)
		}
		if err != nil {
			fmt.Fprintf(a.stderr, "ERROR: %v\n", err)
			failed = append(failed, ref)
			continue
		}
		fmt.Fprintln(a.stdout, b.ID)
	}
	if len(failed) > 0 {
		return exitError{1}
	}
	return nil
}

func cmdBuildsExport(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "builds export", "ID|latest -o FILE")
	out := fs.StringP("output", "o", "", "the tar file to write (- for stdout)")
	st, err := a.setup(fs, args, 1, 1)
	if err != nil {
		return err
	}
	defer st.Close()
	if *out == "" {
		return &usageError{err: errors.New("-o FILE is required"), usage: fs.Usage}
	}
	b, err := findBuild(ctx, st, fs.Arg(0))
	if err != nil {
		return err
	}
	log, err := st.cache.BuildLog(ctx, b.ID)
	if err != nil && !errors.Is(err, cache.ErrNotFound) {
		return err
	}
	if *out == "-" {
		return writeBuildBundle(a.stdout, b, log)
	}
	return writeFileWith(*out, 0o644, func(w io.Writer) error { return writeBuildBundle(w, b, log) }) // as -o archives
}

// writeBuildBundle writes a build as a tar: record.json (every step's
// inputs included), Dockerfile (when recorded) and build.log (when kept).
func writeBuildBundle(w io.Writer, b *cache.BuildRecord, log []byte) error {
	rec, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	type file struct {
		name string
		data []byte
	}
	files := []file{{"record.json", append(rec, '\n')}}
	if b.Request != nil && b.Request.DockerfileText != "" {
		files = append(files, file{"Dockerfile", []byte(b.Request.DockerfileText)})
	}
	if log != nil {
		files = append(files, file{"build.log", log})
	}
	tw := tar.NewWriter(w)
	mtime := b.Finished
	if mtime.IsZero() {
		mtime = b.Started
	}
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}
