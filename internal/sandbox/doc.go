// Package sandbox runs one command isolated on a prepared root filesystem,
// the way a Dockerfile RUN step needs it.
//
// The builder re-executes its own binary (/proc/self/exe) with the hidden
// argument InitArg in new mount, PID, UTS and IPC namespaces (plus a new
// network namespace for Network "none"). That child, the sandbox init, reads
// the Spec as JSON from a pipe, mounts the root filesystem inside its private
// mount namespace, adds /proc, a minimal /dev, a read-only /sys with the
// RUN's cgroups and the generated, read-only /etc/hosts and /etc/resolv.conf
// as runc does for BuildKit, pivots into the
// root and starts the command with Docker's default capabilities as the
// requested uid/gid. As PID 1 of the namespace it reaps orphans, forwards
// SIGINT/SIGTERM and, once the command exits, kills whatever is left, unmounts
// its mount points, removes the stubs it had to create for them (restoring the
// parent directories' times, so a snapshot diff sees nothing) and exits with
// the command's status.
//
// Every mount lives in the child's mount namespace only, so nothing is left
// mounted on the host when the child dies, however it dies.
//
// A rootless builder runs all of this inside its own user namespace (where
// /dev nodes are bound from the host instead of made). Where no namespace
// may be created at all (an unprivileged container), IsolationChroot runs
// the command chrooted into a plain directory instead: see chroot_linux.go
// for what that does and does not protect.
//
// main must call Init before anything else:
//
//	func main() {
//		if sandbox.Init() {
//			return // not reached: Init exits the process
//		}
//		...
//	}
package sandbox
