package sandbox

// Isolation modes of a Spec.
const (
	// IsolationNamespaces runs RUN in new mount, PID, UTS, IPC and
	// network namespaces on a root it mounts and pivots into: a root
	// build's isolation, and a rootless build's (IsolationRootless is the
	// same inside the builder's user namespace).
	IsolationNamespaces = "namespaces"
	// IsolationRootless is IsolationNamespaces inside the user namespace
	// of a builder run by an ordinary user.
	IsolationRootless = "rootless"
	// IsolationChroot runs RUN chrooted into a plain directory, with no
	// new namespace and no mount: for unprivileged containers, whose
	// seccomp profile or kernel refuse both. The command shares the
	// builder's network, processes and IPC; /proc and /sys are absent.
	IsolationChroot = "chroot"
)
