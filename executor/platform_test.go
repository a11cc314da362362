package executor

import (
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// A RUN for a platform this machine cannot run fails before any work,
// naming its line; a stage for that platform without RUN needs nothing.
func TestRunChecksPlatformsFirst(t *testing.T) {
	canRun := func(o *Options) {
		o.CanRun = func(p v1.Platform) error {
			if p.Architecture == "riscv64" {
				return errors.New("RUN needs linux/riscv64: no emulator registered")
			}
			return nil
		}
	}
	f := newFakeBuild(t)
	f.write("a", "a")
	_, _, err := f.run("FROM scratch AS ok\nRUN echo native\nFROM --platform=linux/riscv64 scratch\nCOPY a /a\nRUN echo foreign\n", canRun)
	var se *StepError
	if !errors.As(err, &se) || se.Line != 5 || !strings.Contains(err.Error(), "no emulator registered") {
		t.Fatalf("build with a riscv64 RUN: %v, want a StepError at line 5", err)
	}
	if cmds := f.sandbox.commands(); len(cmds) != 0 {
		t.Errorf("ran %q before failing; want nothing", cmds)
	}
	res, _ := f.mustRun("FROM --platform=linux/riscv64 scratch\nCOPY a /a\n", canRun)
	cfg, err := res.Image.ConfigFile()
	if err != nil || cfg.Architecture != "riscv64" || cfg.OS != "linux" {
		t.Errorf("COPY-only riscv64 image config: %+v, %v", cfg, err)
	}
}

// With an explicit target platform the final image is for it, whatever
// its base's platform (a FROM --platform=$BUILDPLATFORM stage), as BuildKit.
func TestFinalImageTakesTargetPlatform(t *testing.T) {
	f := newFakeBuild(t)
	f.write("a", "a")
	target := v1.Platform{OS: "darwin", Architecture: "ppc64le"}
	res, _ := f.mustRun("FROM --platform=linux/amd64 scratch\nCOPY a /a\n", func(o *Options) { o.TargetPlatform = &target })
	cfg, err := res.Image.ConfigFile()
	if err != nil || cfg.OS != "darwin" || cfg.Architecture != "ppc64le" {
		t.Errorf("config platform %s/%s (%v), want darwin/ppc64le", cfg.OS, cfg.Architecture, err)
	}
	res, _ = f.mustRun("FROM --platform=linux/amd64 scratch\nCOPY a /a\n")
	if cfg, err := res.Image.ConfigFile(); err != nil || cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("without a target platform: %s/%s (%v), want the stage's linux/amd64", cfg.OS, cfg.Architecture, err)
	}
}
