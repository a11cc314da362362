package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/builder-dev/builder/exporter"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func cmdPull(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "pull", "[OPTIONS] NAME[:TAG|@DIGEST]")
	platform := fs.String("platform", "", "platform of a multi-platform image (default: the host's)")
	quiet := fs.BoolP("quiet", "q", false, "print only the image digest")
	st, err := a.setup(fs, args, 1, 1)
	if err != nil {
		return err
	}
	defer st.Close()
	p, err := targetPlatform(*platform)
	if err != nil {
		return err
	}
	if err := st.lockShared(ctx); err != nil {
		return err
	}
	ref := fs.Arg(0)
	progress := a.progressLines()
	if *quiet {
		progress = nil
	}
	digest, err := st.images.Pull(ctx, ref, a.remoteOptions(p, progress))
	if err != nil {
		return err
	}
	if *quiet {
		fmt.Fprintln(a.stdout, digest)
		return nil
	}
	fmt.Fprintf(a.stdout, "Pulled %s\nDigest: %s\n", ref, digest)
	return nil
}

// remoteOptions are the registry options of this invocation: the target
// platform, the insecure registries of --insecure-registry and
// $BUILDER_INSECURE_REGISTRIES (comma-separated), docker's credentials,
// and progress lines.
func (a *app) remoteOptions(p v1.Platform, progress func(string)) exporter.RemoteOptions {
	insecure := append([]string(nil), a.insecure...)
	for _, h := range strings.Split(os.Getenv("BUILDER_INSECURE_REGISTRIES"), ",") {
		if h = strings.TrimSpace(h); h != "" {
			insecure = append(insecure, h)
		}
	}
	return exporter.RemoteOptions{Platform: p, Insecure: insecure, Progress: progress}
}

// progressLines returns a progress callback that writes each line to
// stderr, safe for concurrent use.
func (a *app) progressLines() func(string) {
	var mu sync.Mutex
	return func(s string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(a.stderr, s)
	}
}

// appendValue is a repeatable string flag that adds to a slice other flag
// sets may have filled (a global flag given again after the subcommand).
type appendValue struct{ p *[]string }

func (v appendValue) String() string     { return strings.Join(*v.p, ",") }
func (v appendValue) Type() string       { return "stringArray" }
func (v appendValue) Set(s string) error { *v.p = append(*v.p, s); return nil }
