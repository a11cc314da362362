package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/builder-dev/builder/snapshot"
	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// Isolation chroot: for unprivileged containers, where seccomp refuses new
// namespaces and nothing may be mounted. The init does not leave the
// builder's namespaces; the command is chrooted into the root directory
// (a plain copy, never mounted) and loses CAP_SYS_CHROOT with Docker's
// other non-default capabilities, so it cannot chroot back out. What a
// namespace would give is emulated with files placed in the root for the
// command's life and removed after it (their directories' times restored,
// so the layer diff sees nothing): /etc/hosts, /etc/resolv.conf (no
// /etc/hostname, as BuildKit), secret and heredoc files (Spec.Files), and the /dev
// nodes where mknod is allowed (CAP_MKNOD, Docker's default for root).
// There is no /proc or /sys, and the command shares the builder's
// network, processes and IPC: it can see and signal them. The init is a
// child subreaper, so whatever the command leaves running is found and
// killed when it ends.

// chrootRoot is the root directory of a chroot Spec: the source of its
// only mount, a bind.
func chrootRoot(ms []snapshot.Mount) (string, error) {
	if len(ms) != 1 || (ms[0].Type != "bind" && ms[0].Type != "rbind") {
		return "", fmt.Errorf("%w: isolation chroot needs one bind mount (the copy snapshotter's directory), not %d mounts", ErrInvalidSpec, len(ms))
	}
	return ms[0].Source, nil
}

// validateChroot refuses what isolation chroot cannot do.
func validateChroot(spec Spec) error {
	if _, err := chrootRoot(spec.Mounts); err != nil {
		return err
	}
	if spec.Network != NetworkHost {
		return fmt.Errorf("%w: network %q needs a network namespace, which isolation chroot does not have (RUN shares the builder's network)", ErrInvalidSpec, orNone(spec.Network))
	}
	if len(spec.Binds) > 0 || len(spec.Tmpfs) > 0 {
		return fmt.Errorf("%w: RUN --mount=type=bind, cache, tmpfs and ssh need mounts, which isolation chroot does not have", ErrInvalidSpec)
	}
	if spec.Insecure {
		return fmt.Errorf("%w: --security=insecure needs namespaces, which isolation chroot does not have", ErrInvalidSpec)
	}
	return CheckChroot()
}

func orNone(n string) string {
	if n == "" {
		return NetworkNone
	}
	return n
}

// CheckChroot reports whether this process may chroot: it needs
// CAP_SYS_CHROOT (root in a container has it; the builder image's binary
// carries it as a file capability for other users).
func CheckChroot() error {
	ok, err := hasCapability(unix.CAP_SYS_CHROOT)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("RUN needs new namespaces or chroot(2), and neither is allowed here: run builder as root in the container, or use the builder image, whose binary carries the capabilities chroot isolation needs (see README \"Rootless and CI containers\")")
	}
	return nil
}

// hasCapability reports whether capability c is in the process's
// effective set.
func hasCapability(c int) (bool, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			eff, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, fmt.Errorf("parse CapEff %q: %w", v, err)
			}
			return eff&(1<<uint(c)) != 0, nil
		}
	}
	return false, errors.New("no CapEff in /proc/self/status")
}

// chrooted is the state of a chroot sandbox's placed files.
type chrooted struct {
	sb      *sandbox // root and the stubs created for missing paths
	shadows []shadow
	// dirTimes are the times of the directories entries were placed in,
	// before the first one, and placed their times once all were placed.
	dirTimes, placed map[string][2]unix.Timespec
	// stubbed are the directories that got a stub: BuildKit's runtime
	// creates those mount points too, and its parent keeps the new time.
	stubbed map[string]bool
}

// shadow is an existing entry of the root moved aside for the command's
// life (to saved, in the same directory).
type shadow struct {
	rel, saved string
}

// runChroot is the init's work under isolation chroot.
func runChroot(cfg *config) result {
	root, err := chrootRoot(cfg.Mounts)
	if err != nil {
		return result{Error: err.Error()}
	}
	c := &chrooted{sb: &sandbox{root: root}, dirTimes: map[string][2]unix.Timespec{}, placed: map[string][2]unix.Timespec{}, stubbed: map[string]bool{}}
	res := result{}
	if err := c.setup(cfg); err != nil {
		res.Error = err.Error()
	} else {
		res = supervise(cfg)
	}
	if err := c.teardown(); err != nil && res.Error == "" {
		res.Error = err.Error()
	}
	return res
}

func (c *chrooted) setup(cfg *config) error {
	etc := map[string][]byte{
		"etc/hosts": cfg.Hosts, "etc/resolv.conf": cfg.ResolvConf,
	}
	for _, rel := range []string{"etc/hosts", "etc/resolv.conf"} {
		data := etc[rel]
		if err := c.place(rel, func(p string) error { return writeNew(p, data, 0o644, 0, 0) }); err != nil {
			return err
		}
	}
	for _, f := range cfg.Files {
		rel := strings.TrimPrefix(filepath.Clean(f.Target), "/")
		if err := c.place(rel, func(p string) error { return writeNew(p, f.Data, f.Mode&0o7777, f.UID, f.GID) }); err != nil {
			return err
		}
	}
	if err := c.devices(); err != nil {
		return err
	}
	for dir := range c.dirTimes {
		var st unix.Stat_t
		if err := unix.Lstat(dir, &st); err != nil {
			return fmt.Errorf("stat %s: %w", dir, err)
		}
		c.placed[dir] = [2]unix.Timespec{st.Atim, st.Mtim}
	}
	return nil
}

// devices places the usual /dev nodes where mknod is allowed; without
// CAP_MKNOD (or in a user namespace) RUN has no /dev nodes.
func (c *chrooted) devices() error {
	if ok, err := hasCapability(unix.CAP_MKNOD); err != nil || !ok || inUserNS() {
		return err
	}
	for _, n := range devNodes {
		err := c.place("dev/"+n.name, func(p string) error {
			if err := mknod(filepath.Dir(p), devNode{name: filepath.Base(p), major: n.major, minor: n.minor}); err != nil {
				return err
			}
			return os.Lchown(p, 0, 0) // the builder may be an ordinary user with capabilities
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// place puts an entry at rel (resolved inside the root) with create: a
// missing one as a stub removed afterwards, an existing one after moving
// the original aside until teardown.
func (c *chrooted) place(rel string, create func(p string) error) error {
	full, err := securejoin.SecureJoin(c.sb.root, rel)
	if err != nil {
		return fmt.Errorf("resolve /%s in root: %w", rel, err)
	}
	resolved, err := filepath.Rel(c.sb.root, full)
	if err != nil || resolved == "." || strings.HasPrefix(resolved, "..") {
		return fmt.Errorf("resolve /%s in root: got %s", rel, full)
	}
	if dir := filepath.Dir(resolved); dir != "." {
		if _, err := c.sb.ensure(dir, true); err != nil {
			return err
		}
	}
	if _, ok := c.dirTimes[filepath.Dir(full)]; !ok {
		var parent unix.Stat_t
		if err := unix.Lstat(filepath.Dir(full), &parent); err != nil {
			return fmt.Errorf("stat parent of /%s: %w", resolved, err)
		}
		c.dirTimes[filepath.Dir(full)] = [2]unix.Timespec{parent.Atim, parent.Mtim}
	}
	var st unix.Stat_t
	switch err := unix.Lstat(full, &st); {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return fmt.Errorf("/%s is a directory", resolved)
	case err == nil:
		saved := filepath.Join(filepath.Dir(full), ".builder-shadow-"+filepath.Base(full))
		if err := os.Rename(full, saved); err != nil {
			return fmt.Errorf("move /%s aside: %w", resolved, err)
		}
		c.shadows = append(c.shadows, shadow{rel: resolved, saved: saved})
	case errors.Is(err, unix.ENOENT):
		c.sb.stubs = append(c.sb.stubs, stub{rel: resolved})
		c.stubbed[filepath.Dir(full)] = true
	default:
		return fmt.Errorf("stat /%s: %w", resolved, err)
	}
	return create(full)
}

// writeNew creates p with data, mode and owner.
func writeNew(p string, data []byte, mode, uid, gid uint32) error {
	fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := f.Chown(int(uid), int(gid)); err != nil {
		return fmt.Errorf("chown %s: %w", p, err)
	}
	if err := f.Chmod(os.FileMode(mode) | modeBits(mode)); err != nil {
		return fmt.Errorf("chmod %s: %w", p, err)
	}
	return f.Close()
}

// modeBits turns setuid, setgid and sticky bits into os.FileMode's.
func modeBits(mode uint32) os.FileMode {
	var m os.FileMode
	if mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

// teardown puts the root back as it was: the placed entries go, the
// originals return, and their parents get back the times they had before
// unless the command changed them or a stub went in them.
func (c *chrooted) teardown() error {
	var errs []error
	// What the command did to a directory stays; what placing the
	// entries did to it is undone, as where the runtime mounts over an
	// existing file: its times are those before the entries were placed
	// unless the command changed it since, or a stub went in it.
	after := map[string][2]unix.Timespec{}
	for _, s := range c.shadows {
		dir := filepath.Dir(filepath.Join(c.sb.root, s.rel))
		if _, ok := after[dir]; ok {
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(dir, &st); err != nil {
			errs = append(errs, fmt.Errorf("stat %s: %w", dir, err))
			continue
		}
		after[dir] = [2]unix.Timespec{st.Atim, st.Mtim}
	}
	for i := len(c.shadows) - 1; i >= 0; i-- {
		s := c.shadows[i]
		p := filepath.Join(c.sb.root, s.rel)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove /%s: %w", s.rel, err))
			continue
		}
		if err := os.Rename(s.saved, p); err != nil {
			errs = append(errs, fmt.Errorf("restore /%s: %w", s.rel, err))
		}
	}
	for dir, ts := range after {
		if ts[1] == c.placed[dir][1] && !c.stubbed[dir] {
			ts = c.dirTimes[dir]
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dir, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
			errs = append(errs, fmt.Errorf("restore times of %s: %w", dir, err))
		}
	}
	// A stub file the command replaced by a directory is its content now.
	errs = append(errs, c.sb.removeStubs())
	return errors.Join(errs...)
}

// killDescendants kills and reaps every process left below the init once
// the command has exited: without a PID namespace, the init (a child
// subreaper) inherits them all.
func killDescendants() {
	self := os.Getpid()
	for range 100 {
		kids := children(self)
		if len(kids) == 0 {
			return
		}
		for _, pid := range kids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		for {
			pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parens.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 {
			if ppid, err := strconv.Atoi(f[1]); err == nil && ppid == pid {
				out = append(out, n)
			}
		}
	}
	return out
}
