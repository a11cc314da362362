package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is set at link time (make build: -X main.version=...); without
// it the module version or VCS revision the binary was built from is used.
var version = ""

func cmdVersion(_ context.Context, a *app, args []string) error {
	fs := newFlags(a, "version", "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := needArgs(fs, 0, 0); err != nil {
		return err
	}
	printVersion(a.stdout)
	return nil
}

// printVersion prints "builder VERSION (REVISION) GOVERSION OS/ARCH".
func printVersion(w io.Writer) {
	v, rev := buildVersion()
	fmt.Fprintf(w, "builder %s", v)
	if rev != "" {
		fmt.Fprintf(w, " (%s)", rev)
	}
	fmt.Fprintf(w, " %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// buildVersion returns the version and the VCS revision (with "-dirty"
// when the tree had changes) recorded in the binary.
func buildVersion() (v, rev string) {
	v = version
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return orDev(v), ""
	}
	if v == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v = info.Main.Version
	}
	dirty := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
			if len(rev) > 12 {
				rev = rev[:12]
			}
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return orDev(v), rev
}

func orDev(v string) string {
	if v == "" {
		return "dev"
	}
	return v
}
