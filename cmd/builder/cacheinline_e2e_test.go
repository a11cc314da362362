package main

import (
	"regexp"
	"strings"
	"testing"
)

// --cache-to type=inline puts the cache in the pushed image's config;
// --cache-from that image on a fresh store reuses its steps. A --cache-from
// image without inline cache, or another tool's cache, is a warning and
// the build goes on; a failing --cache-to with ignore-error=true too.
func TestE2EInlineCacheAndCacheErrors(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	e.mustRun("push", "busybox:fixture", reg+"/base/busybox:fixture")
	df := "FROM " + reg + "/base/busybox:fixture\nCOPY a.txt /a\nRUN cat /a > /b && echo ran\n"
	dir := e.context(df, map[string]string{"a.txt": "inline\n"})
	app := reg + "/inline/app:v1"
	e.mustRun("build", "--cache-to", "type=inline", "-t", app, "--push", dir)

	fresh := e.fresh("inline-fresh")
	_, out := fresh.mustRun("build", "--progress", "plain", "--cache-from", app, dir)
	for _, step := range []string{"COPY a.txt /a", "RUN cat /a"} {
		if !cachedFrom(out, step, app) {
			t.Errorf("%s not reused from the inline cache of %s:\n%s", step, app, out)
		}
	}
	if regexp.MustCompile(`(?m)^#\d+ [0-9.]+ ran$`).MatchString(out) {
		t.Errorf("the RUN ran:\n%s", out)
	}

	// An image without inline cache: a warning, and the build goes on.
	plain := reg + "/inline/plain:v1"
	e.mustRun("build", "-t", plain, "--push", dir)
	other := e.fresh("inline-other")
	_, out = other.mustRun("build", "--progress", "plain", "--cache-from", plain, dir)
	if !strings.Contains(out, "[warning] cache-from "+plain+" is not a builder cache") || !strings.Contains(out, "without inline cache") {
		t.Errorf("no warning for an image without inline cache:\n%s", out)
	}

	// A --cache-to that cannot be written: fatal, unless ignore-error=true.
	bad := "type=registry,ref=127.0.0.1:1/cache/x"
	if _, errOut, err := e.run("build", "--cache-to", bad, dir); err == nil {
		t.Errorf("an unwritable --cache-to did not fail the build:\n%s", errOut)
	}
	_, out = e.mustRun("build", "--progress", "plain", "--cache-to", bad+",ignore-error=true", dir)
	if !strings.Contains(out, "[warning] cache-to 127.0.0.1:1/cache/x failed, ignored (ignore-error=true)") {
		t.Errorf("ignore-error=true: no warning:\n%s", out)
	}
}

// cachedFrom reports whether plain progress shows step as a hit of ref.
func cachedFrom(progress, step, ref string) bool {
	id := ""
	for _, l := range strings.Split(progress, "\n") {
		if strings.Contains(l, step) && strings.HasPrefix(l, "#") {
			id, _, _ = strings.Cut(l, " ")
		}
		if id != "" && strings.HasPrefix(l, id+" CACHED (from "+ref+")") {
			return true
		}
	}
	return false
}
