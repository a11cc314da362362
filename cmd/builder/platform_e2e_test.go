package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/fixtures"
	"github.com/builder-dev/builder/internal/emulation"
	"github.com/builder-dev/builder/internal/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// requireEmulation needs programs of p to run here (qemu-user-static
// registered in binfmt_misc with the F flag).
func requireEmulation(t *testing.T, p v1.Platform) {
	t.Helper()
	h, err := emulation.Detect()
	if err == nil {
		_, err = h.CanRun(p)
	}
	if err != nil {
		testenv.SkipOrFail(t, "no emulation for %s/%s: %v", p.OS, p.Architecture, err)
	}
}

// arm64Base stores busybox:arm64, Debian's arm64 busybox, made by a
// COPY-only build (which needs no emulator).
func (e *e2eEnv) arm64Base() {
	e.t.Helper()
	base := filepath.Join(e.dir, "base-arm64")
	if err := fixtures.BusyboxRootfsArch(context.Background(), filepath.Join(base, "rootfs"), "arm64"); err != nil {
		testenv.SkipOrFail(e.t, "no arm64 busybox: %v", err)
	}
	e.write(base, "Dockerfile", "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n")
	e.own(base)
	e.mustRun("build", "--platform", "linux/arm64", "-t", "busybox:arm64", base)
}

// A build for another architecture runs its RUN steps under emulation and
// makes an image for that platform; a base image of the wrong platform is
// refused by name, never used.
func TestE2EForeignPlatformBuild(t *testing.T) {
	e := newEnv(t)
	requireEmulation(t, v1.Platform{OS: "linux", Architecture: "arm64"})
	e.arm64Base()
	ctx := e.context("FROM busybox:arm64\nARG TARGETARCH\nRUN uname -m > /arch && echo $TARGETARCH > /targetarch\n", nil)
	out := filepath.Join(e.dir, "out")
	e.mustRun("build", "--platform", "linux/arm64", "-t", "app:arm64", "-o", "type=local,dest="+out, ctx)
	if got := readOut(t, out, "arch") + readOut(t, out, "targetarch"); got != "aarch64\narm64\n" {
		t.Errorf("/arch, /targetarch = %q, want aarch64, arm64", got)
	}
	stdout, _, err := e.run("inspect", "app:arm64")
	if err != nil || !strings.Contains(stdout, `"architecture": "arm64"`) {
		t.Errorf("inspect app:arm64: %v\n%s", err, stdout)
	}
	_, errOut, err := e.run("build", "--platform", "linux/amd64", ctx)
	if err == nil || !strings.Contains(errOut, "the local one is for linux/arm64, not linux/amd64") || !strings.Contains(errOut, "Dockerfile:1") {
		t.Errorf("build for amd64 FROM an arm64-only image: err %v, want the platforms named\n%s", err, errOut)
	}
}
