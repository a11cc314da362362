package main

import (
	"slices"
	"testing"
)

// TestE2EPushMountsAndSkips, counted at the registry (a proxy in front of
// it): a store that pulled its base image from one repository pushes an
// image built on it to another repository of the same registry by
// mounting the base layer (no upload of its bytes); only the new layers
// and the config are uploaded; a second push of the unchanged image
// uploads and mounts nothing (one HEAD per blob says the registry has it).
func TestE2EPushMountsAndSkips(t *testing.T) {
	e := newEnv(t)
	p := startRegProxy(t, startRegistry(t))
	base := p.Addr + "/base/busybox:fixture"
	e.mustRun("push", "busybox:fixture", base)
	baseLayers := layerDigestStrings(t, base)

	b := e.fresh("root-b")
	ctx := e.context("FROM "+base+"\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n", map[string]string{"a.txt": "hello\n"})
	b.mustRun("build", "-t", "app:v1", ctx) // pulls base
	p.reset()
	app := p.Addr + "/app/web:v1"
	b.mustRun("push", "app:v1", app)
	appLayers := layerDigestStrings(t, app)
	for _, d := range baseLayers {
		if slices.Contains(p.uploads(), d) {
			t.Errorf("base layer %s uploaded again, want it mounted; uploads %v", d, p.uploads())
		}
		if !slices.Contains(p.mounts(), d) {
			t.Errorf("base layer %s not mounted from base/busybox; mounts %v", d, p.mounts())
		}
	}
	for _, d := range appLayers {
		if !slices.Contains(baseLayers, d) && !slices.Contains(p.uploads(), d) {
			t.Errorf("new layer %s not uploaded; uploads %v", d, p.uploads())
		}
	}

	p.reset()
	b.mustRun("push", "app:v1", app)
	if up, m := p.uploads(), p.mounts(); len(up) != 0 || len(m) != 0 {
		t.Errorf("push of an unchanged image: uploads %v, mounts %v; want none", up, m)
	}
	for _, r := range p.requests() {
		if r.Method == "POST" || r.Method == "PATCH" {
			t.Errorf("push of an unchanged image sent %s %s?%s", r.Method, r.Path, r.Query)
		}
	}
}

// layerDigestStrings lists the layer digests of the image ref in its
// registry.
func layerDigestStrings(t *testing.T, ref string) []string {
	t.Helper()
	var out []string
	for _, l := range mustManifest(t, ref).Layers {
		out = append(out, l.Digest.String())
	}
	if len(out) == 0 {
		t.Fatalf("%s has no layers", ref)
	}
	return out
}
