// Command builder-sbom is builder's SBOM scanner: BuildKit's SBOM
// generator protocol (BuildKit's docs/attestations/sbom-protocol.md)
// served by syft, the library of BuildKit's own scanner image
// (docker/buildkit-syft-scanner), in process. builder runs it for
// --sbom; it is a program of its own, in a module of its own, because
// syft and its dependencies are several times builder's size.
//
// It scans $BUILDKIT_SCAN_SOURCE (the image's root filesystem) and every
// directory of $BUILDKIT_SCAN_SOURCE_EXTRAS (build stages, the context),
// and writes, per target NAME, $BUILDKIT_SCAN_DESTINATION/NAME.spdx.json:
// an in-toto statement whose predicate is the target's SPDX JSON SBOM.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "builder-sbom:", err)
		os.Exit(1)
	}
}
