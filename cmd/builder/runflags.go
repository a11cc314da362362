package main

import (
	"fmt"

	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/spf13/pflag"
)

// runFlags are the build options that say how RUN steps run: their
// isolation and (cgroup) resource limits. None is part of a cache key.
type runFlags struct {
	isolation string
}

// addRunFlags registers the options of runFlags, named as in docker build.
func addRunFlags(fs *pflag.FlagSet, f *runFlags) {
	fs.StringVar(&f.isolation, "isolation", "auto", "isolation of RUN steps: auto, namespaces (root), rootless (an ordinary user's user namespace) or chroot (unprivileged containers); \"default\" is auto")
}

// check validates the values (--isolation was already acted on before
// the command ran: enterIsolation).
func (f *runFlags) check() error {
	_, err := parseIsolation(f.isolation)
	return err
}

// snapshotter is the snapshotter kind to use under the isolation: chroot
// mounts nothing, so it needs the copy snapshotter.
func (iso isolation) snapshotter(requested string) (string, error) {
	if iso.mode != sandbox.IsolationChroot {
		return requested, nil
	}
	switch requested {
	case "", "auto", "copy":
		return "copy", nil
	}
	return "", fmt.Errorf("--snapshotter %s: isolation chroot mounts nothing; it needs the copy snapshotter", requested)
}
