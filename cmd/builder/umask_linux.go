package main

import (
	"sync"

	"golang.org/x/sys/unix"
)

// Reproducible file modes.
//
// Everything the builder creates on its own inside a root filesystem or a
// layer — the directories of WORKDIR, the missing parents of a COPY/ADD
// destination or of a layer entry, the upper directory that becomes an
// overlay's "/", a RUN --mount=type=cache directory, the mount points of
// RUN --mount targets — is made with os.Mkdir/MkdirAll, mkdirat or mknod,
// whose mode the kernel masks with the process umask. A builder started
// under umask 077 would make them 0700 where Docker and BuildKit make them
// 0755, and the image digest would depend on the machine.
//
// Rather than chmod after each of those calls (and after every one added
// later), every command runs with the fixed umask 022 that Docker's
// daemon, BuildKit and runc use: a requested 0755 is then 0755 on every
// machine and the whole class of umask-dependent modes cannot happen. The
// sandbox sets 022 for RUN processes as well (internal/sandbox runInit).
// The store does not depend on the umask: its directories and files are
// created 0700/0600 and re-checked (cache.Open).
//
// What the builder writes for the user outside the store does not take
// the fixed umask: docker/OCI archives (-o, save -o) are chmodded 0644
// explicitly and --iidfile/--metadata-file are 0600 temp files renamed
// into place, as before; the writes whose mode comes from the umask run
// under the user's: the CPU profile (created before fixUmask), a
// --cache-to type=local layout (withUserUmask in exportCaches). The
// directory a -o type=local export creates for its dest= is 0700, as
// BuildKit's client makes it (exporter.WriteLocalOutput); the tree
// inside it is the image's and keeps the image's modes.

// fixedUmask is the umask of every builder command.
const fixedUmask = 0o022

var (
	umaskMu sync.Mutex
	// userUmask is the umask the process was started with.
	userUmask = fixedUmask
)

// fixUmask sets the process umask to fixedUmask and remembers the user's.
// It is called once, before a command runs.
func fixUmask() {
	umaskMu.Lock()
	defer umaskMu.Unlock()
	userUmask = unix.Umask(fixedUmask)
}

// withUserUmask runs fn under the user's umask, for files written for the
// user (not into a root filesystem, a layer or the store). The umask is
// the process's, so fn must run when nothing else creates files: at the
// end of a build, after its last step.
func withUserUmask(fn func() error) error {
	umaskMu.Lock()
	defer umaskMu.Unlock()
	unix.Umask(userUmask)
	defer unix.Umask(fixedUmask)
	return fn()
}
