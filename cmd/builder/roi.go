package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/docker/go-units"
)

// roi is what the cache gave a build: the steps it reused and those it
// ran, and the time the reused steps took when they ran.
type roi struct {
	reused, run int
	savedMS     int64
	// unknown counts the reused steps whose run time is not recorded
	// (from a remote cache, or a record of an older builder).
	unknown int
}

// roiOf counts the build's steps that have a cache key (RUN, COPY, ADD,
// WORKDIR: a stage's FROM and the config-only steps have nothing to reuse).
func roiOf(b *cache.BuildRecord) roi {
	var r roi
	for _, s := range b.Steps {
		if !keyedStep(s) {
			continue
		}
		switch s.Cache {
		case "hit":
			r.reused++
			r.savedMS += s.SavedMS
			if s.SavedMS == 0 {
				r.unknown++
			}
		case "miss":
			r.run++
		}
	}
	return r
}

// keyedStep reports whether s is a step the cache can reuse.
func keyedStep(s cache.StepRecord) bool {
	if s.Key.IsZero() {
		return false
	}
	if s.Inputs != nil {
		return s.Inputs.Op != "FROM"
	}
	return !strings.HasPrefix(strings.ToUpper(s.Instruction), "FROM ")
}

// summary is the one line saying what the cache gave and cost: steps
// reused and run, time saved, each cache ref's bytes and seconds, the
// layers pushed and skipped.
func (r roi) summary(b *cache.BuildRecord) string {
	parts := []string{fmt.Sprintf("%d of %s reused, %d run", r.reused, plural(r.reused+r.run, "step"), r.run)}
	if r.reused > 0 {
		saved := fmt.Sprintf("%s saved", seconds(r.savedMS))
		if r.unknown > 0 {
			saved += fmt.Sprintf(" (+%d reused without a recorded run time)", r.unknown)
		}
		parts = append(parts, saved)
	}
	for _, c := range b.Caches {
		parts = append(parts, cacheUseText(c))
	}
	for _, o := range b.Outputs {
		if o.Type == "registry" {
			parts = append(parts, fmt.Sprintf("push %s: %d layers pushed, %d skipped", o.Name, o.LayersPushed, o.LayersSkipped))
		}
	}
	return "cache: " + strings.Join(parts, "; ")
}

func cacheUseText(c cache.CacheUse) string {
	if c.Direction == "import" {
		if c.Warning != "" {
			return fmt.Sprintf("cache-from %s: %s", c.Ref, c.Warning)
		}
		return fmt.Sprintf("cache-from %s: %s (%s) imported, %s in %s", c.Ref, plural(c.Steps, "step"), plural(c.Layers, "layer"),
			units.HumanSize(float64(c.Bytes)), seconds(c.DurationMS))
	}
	return fmt.Sprintf("cache-to %s: %s, %s written, %d already there, %s in %s", c.Ref, plural(c.Records, "record"),
		plural(c.Layers, "layer"), c.LayersSkipped, units.HumanSize(float64(c.Bytes)), seconds(c.DurationMS))
}

func seconds(ms int64) string {
	return fmt.Sprintf("%.1fs", (time.Duration(ms) * time.Millisecond).Seconds())
}

// lines says what the cache gave the build, for `builds inspect`.
func (r roi) lines(b *cache.BuildRecord) []string {
	out := []string{strings.TrimPrefix(r.summary(b), "cache: ")}
	return append(out, coverage(b)...)
}

// maxUncovered is how many steps a coverage line names.
const maxUncovered = 3

// coverage says, for each --cache-from ref that was read, how many of the
// steps the local cache lacked it held, and why the first steps it did
// not hold differ (the miss reasons, against the previous build here).
// Only the first missing step of a chain is named: the steps after it
// miss because it did.
func coverage(b *cache.BuildRecord) []string {
	var out []string
	var imports []cache.CacheUse
	for _, c := range b.Caches {
		if c.Direction == "import" && c.Warning == "" {
			imports = append(imports, c)
		}
	}
	for i, c := range imports {
		later := map[string]bool{}
		for _, l := range imports[i:] {
			later["from "+l.Ref] = true
		}
		asked, found := 0, 0
		var missing []string
		ranBefore := map[string]bool{} // per stage: the previous keyed step ran
		for _, s := range b.Steps {
			if !keyedStep(s) {
				continue
			}
			ran := s.Cache == "miss"
			if ran || later[s.Reason] {
				asked++
			}
			if s.Reason == "from "+c.Ref {
				found++
			}
			if ran && !ranBefore[s.Stage] {
				missing = append(missing, fmt.Sprintf("line %d (%s) not in cache: %s", s.Line, clipText(oneLine(s.Instruction), 40), s.Reason))
			}
			ranBefore[s.Stage] = ran
		}
		line := fmt.Sprintf("cache-from %s: %d of %s found", c.Ref, found, plural(asked, "step"))
		if asked == 0 {
			line = fmt.Sprintf("cache-from %s: not needed, every step was in the local cache", c.Ref)
		}
		if len(missing) > maxUncovered {
			missing = append(missing[:maxUncovered], fmt.Sprintf("and %d more", len(missing)-maxUncovered))
		}
		if len(missing) > 0 {
			line += "; " + strings.Join(missing, "; ")
		}
		out = append(out, line)
	}
	return out
}

// cacheReport is what a build prints about its cache use at the end.
func cacheReport(b *cache.BuildRecord) []string {
	return append([]string{roiOf(b).summary(b)}, coverage(b)...)
}

// cacheMetadata is the --metadata-file view of the cache use.
type cacheMetadata struct {
	StepsReused int `json:"steps_reused"`
	StepsRun    int `json:"steps_run"`
	// TimeSavedMS sums the recorded run times of the reused steps;
	// ReusedWithoutTime counts those without one.
	TimeSavedMS       int64               `json:"time_saved_ms"`
	ReusedWithoutTime int                 `json:"reused_without_time"`
	Refs              []cache.CacheUse    `json:"refs"`
	Outputs           []cache.BuildOutput `json:"outputs"`
	Coverage          []string            `json:"coverage,omitempty"`
}

func cacheMetadataOf(b *cache.BuildRecord) cacheMetadata {
	r := roiOf(b)
	m := cacheMetadata{StepsReused: r.reused, StepsRun: r.run, TimeSavedMS: r.savedMS, ReusedWithoutTime: r.unknown,
		Refs: b.Caches, Outputs: b.Outputs, Coverage: coverage(b)}
	if m.Refs == nil {
		m.Refs = []cache.CacheUse{}
	}
	if m.Outputs == nil {
		m.Outputs = []cache.BuildOutput{}
	}
	return m
}
