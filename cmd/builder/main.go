// Command builder builds container images from Dockerfiles without a daemon.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"syscall"

	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/spf13/pflag"
)

// exitError carries a specific exit status.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// app is the state shared by every subcommand.
type app struct {
	root   string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	// insecure lists registries allowed plain HTTP (--insecure-registry,
	// $BUILDER_INSECURE_REGISTRIES).
	insecure []string

	// isolation is how RUN steps are isolated in this process
	// (isolation_linux.go), decided before the command runs.
	isolation isolation
}

type command struct {
	summary string
	run     func(ctx context.Context, a *app, args []string) error
	// mounts is true for subcommands that mount filesystems: they run in
	// a private mount namespace so nothing they mount outlives them.
	mounts bool
}

var commands = map[string]command{
	"build":   {"Build an image from a Dockerfile", cmdBuild, true},
	"builds":  {"List, inspect, replay, remove and export build records (builds ls|inspect|logs|rm|export)", cmdBuilds, false},
	"history": {"Show the layers of an image, what made them and whether they were cached", cmdHistory, false},
	"images":  {"List images in the local store", cmdImages, false},
	"tag":     {"Create a tag TARGET that refers to SOURCE", cmdTag, false},
	"rmi":     {"Remove one or more image tags", cmdRmi, false},
	"save":    {"Save images to a docker-loadable tar archive", cmdSave, false},
	"load":    {"Load images from a docker save or OCI layout tar", cmdLoad, false},
	"inspect": {"Show an image's manifest and config as JSON", cmdInspect, false},
	"prune":   {"Remove unused build cache", cmdPrune, false},
	"pull":    {"Pull an image from a registry into the local store", cmdPull, false},
	"push":    {"Push an image from the local store to a registry", cmdPush, false},
	"diff":    {"Compare two images or builds: per step why it changed, per layer the files that differ", cmdDiff, false},
	"du":      {"Show disk usage of the store", cmdDu, false},
	"fsck":    {"Check every digest and reference of the store; --repair removes what is damaged", cmdFsck, false},
	"verify":  {"Build an image of the store again from nothing and compare: fails naming what differs", cmdVerify, true},
	"version": {"Show the builder version", cmdVersion, false},
}

func main() {
	usernsStage1()
	if sandbox.Init() {
		return
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	fs := pflag.NewFlagSet("builder", pflag.ContinueOnError)
	fs.SetInterspersed(false)
	fs.SetOutput(stderr)
	fs.StringVar(&a.root, "root", defaultRoot(), "directory of the image store and build cache")
	fs.StringArrayVar(&a.insecure, "insecure-registry", nil, "registry HOST[:PORT] to reach over plain HTTP or unverified TLS (repeatable)")
	help := fs.BoolP("help", "h", false, "show help")
	showVersion := fs.BoolP("version", "v", false, "show the builder version")
	fs.Usage = func() { usage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "ERROR: %v\n\n", err)
		usage(stderr, fs)
		return 2
	}
	rest := fs.Args()
	if *showVersion && !*help {
		printVersion(stdout)
		return 0
	}
	if *help || len(rest) == 0 {
		usage(stdout, fs)
		if len(rest) == 0 && !*help {
			return 2
		}
		return 0
	}
	name, cmdArgs := rest[0], rest[1:]
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "ERROR: unknown command %q\n\n", name)
		usage(stderr, fs)
		return 2
	}
	if name != "version" {
		iso, code, reexeced := enterIsolation(isolationArg(cmdArgs), cmd.mounts)
		if reexeced {
			return code
		}
		a.isolation = iso
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer startCPUProfile(stderr)()
	// After the profile (a file for the user): everything the command
	// creates from here on has a mode independent of the user's umask
	// (umask_linux.go).
	fixUmask()
	return exitCodeOf(ctx, stderr, cmd.run(ctx, a, cmdArgs))
}

// exitCodeOf reports a command's error and returns the process's exit
// code: 0, 1 for an error, 2 for a usage error, 130 when interrupted, or
// the code an exitError carries.
func exitCodeOf(ctx context.Context, stderr io.Writer, err error) int {
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "ERROR: %v\n\n", ue.err)
		ue.usage()
		return 2
	}
	if ctx.Err() != nil {
		fmt.Fprintf(stderr, "ERROR: interrupted: %v\n", err)
		return 130
	}
	fmt.Fprintf(stderr, "ERROR: %v\n", err)
	return 1
}

// startCPUProfile writes a pprof CPU profile of the command to the file
// named by $BUILDER_CPUPROFILE, if set (a hidden switch for profiling a
// whole process, e.g. a no-op rebuild), and returns the function that
// stops it.
func startCPUProfile(stderr io.Writer) func() {
	path := os.Getenv("BUILDER_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(stderr, "builder: cpu profile: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(stderr, "builder: cpu profile: %v\n", err)
		}
	}
}

func usage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "Usage: builder [--root DIR] COMMAND [OPTIONS]\n\nA daemonless Dockerfile build system with a content-addressed layer cache.\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nGlobal options:\n%s\nRun 'builder COMMAND --help' for a command's options.\n", fs.FlagUsages())
}

// defaultRoot is $XDG_DATA_HOME/builder, else ~/.local/share/builder.
func defaultRoot() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "builder")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "builder")
	}
	// No HOME (a service, a CI job with a cleared environment). Never a
	// shared directory such as /tmp: whoever made /tmp/builder first
	// would own the store root builds from.
	if os.Geteuid() == 0 {
		return "/var/lib/builder"
	}
	if u, err := user.Current(); err == nil && u.HomeDir != "" && u.HomeDir != "/" {
		return filepath.Join(u.HomeDir, ".local", "share", "builder")
	}
	return "" // stores.go asks for --root
}

// newFlags returns a subcommand's flag set with --help wired up.
func newFlags(a *app, name, usageLine string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.StringVar(&a.root, "root", a.root, "directory of the image store and build cache")
	fs.Var(appendValue{&a.insecure}, "insecure-registry", "registry HOST[:PORT] to reach over plain HTTP or unverified TLS (repeatable)")
	fs.Usage = func() {
		fmt.Fprintf(a.stderr, "Usage: builder %s %s\n\nOptions:\n%s", name, usageLine, fs.FlagUsages())
	}
	return fs
}

// setup parses a subcommand's flags, checks its argument count and opens
// the store.
func (a *app) setup(fs *pflag.FlagSet, args []string, min, max int) (*stores, error) {
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if err := needArgs(fs, min, max); err != nil {
		return nil, err
	}
	return a.open()
}

// usageError is a command line a subcommand cannot parse: run prints it
// with the subcommand's usage.
type usageError struct {
	err   error
	usage func()
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// parseFlags parses a subcommand's flags; an error other than --help is a
// *usageError.
func parseFlags(fs *pflag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return err
	}
	return &usageError{err: err, usage: fs.Usage}
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func needArgs(fs *pflag.FlagSet, min, max int) error {
	n := fs.NArg()
	if n < min || (max >= 0 && n > max) {
		fs.Usage()
		want := fmt.Sprintf("%d", min)
		switch {
		case max < 0:
			want = fmt.Sprintf("at least %d", min)
		case max != min:
			want = fmt.Sprintf("%d to %d", min, max)
		}
		return fmt.Errorf("%q requires %s argument(s), got %d", fs.Name(), want, n)
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
