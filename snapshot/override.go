package snapshot

import (
	"archive/tar"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// What a rootless builder cannot write, it records.
//
// In a user namespace a device node cannot be created (mknod is refused
// except for 0/0 whiteouts) and a file cannot be given an id the
// namespace does not map (chown fails with EINVAL: every id but 0 under a
// single-id mapping). Such an entry is written as well as the namespace
// allows — a device as an empty regular file, an unmapped owner as root —
// and the xattr overrideXattr records what the entry really is. The layer
// tar is made from the record (tarHeader), so a rootless build exports
// exactly the entries a root build does; a RUN step sees the stand-in.
//
// The value is space-separated fields: "c MAJOR:MINOR" or "b MAJOR:MINOR"
// for a device, "uid=N" and "gid=N" for an owner. user.* xattrs exist
// only on regular files and directories, which is where they are needed
// (a device stand-in is a regular file); a symlink or FIFO of an unmapped
// owner is written as root's.
const overrideXattr = OverrideXattr

// OverrideXattr is the xattr of a stand-in's record, which a copy of the
// stand-in (COPY --from in a rootless build) must carry along.
const OverrideXattr = "user.builder.override"

// override is a decoded overrideXattr.
type override struct {
	dev      byte // 0, 'c' or 'b'
	rdev     uint64
	uid, gid *int
}

func (o override) String() string {
	var f []string
	if o.dev != 0 {
		f = append(f, fmt.Sprintf("%c %d:%d", o.dev, unix.Major(o.rdev), unix.Minor(o.rdev)))
	}
	if o.uid != nil {
		f = append(f, "uid="+strconv.Itoa(*o.uid))
	}
	if o.gid != nil {
		f = append(f, "gid="+strconv.Itoa(*o.gid))
	}
	return strings.Join(f, " ")
}

func parseOverride(s string) (override, error) {
	var o override
	f := strings.Fields(s)
	for i := 0; i < len(f); i++ {
		switch {
		case f[i] == "c" || f[i] == "b":
			if i+1 == len(f) {
				return o, fmt.Errorf("invalid %s %q", overrideXattr, s)
			}
			maj, min, ok := strings.Cut(f[i+1], ":")
			ma, err1 := strconv.ParseUint(maj, 10, 32)
			mi, err2 := strconv.ParseUint(min, 10, 32)
			if !ok || err1 != nil || err2 != nil {
				return o, fmt.Errorf("invalid %s %q", overrideXattr, s)
			}
			o.dev, o.rdev = f[i][0], unix.Mkdev(uint32(ma), uint32(mi))
			i++
		case strings.HasPrefix(f[i], "uid=") || strings.HasPrefix(f[i], "gid="):
			n, err := strconv.Atoi(f[i][4:])
			if err != nil || n < 0 {
				return o, fmt.Errorf("invalid %s %q", overrideXattr, s)
			}
			if f[i][0] == 'u' {
				o.uid = &n
			} else {
				o.gid = &n
			}
		default:
			return o, fmt.Errorf("invalid %s %q", overrideXattr, s)
		}
	}
	return o, nil
}

// readOverride returns the record of p, if it has one.
func readOverride(p string) (override, bool, error) {
	v, err := getXattr(p, overrideXattr)
	if err != nil || v == nil {
		return override{}, false, err
	}
	o, err := parseOverride(string(v))
	if err != nil {
		return override{}, false, fmt.Errorf("%s: %w", p, err)
	}
	return o, true, nil
}

// overrideHeader makes the tar header of a stand-in say what its record
// (the xattr's value) says the entry is.
func overrideHeader(hdr *tar.Header, record string) (*tar.Header, error) {
	o, err := parseOverride(record)
	if err != nil {
		return nil, fmt.Errorf("serialize %s: %w", hdr.Name, err)
	}
	if o.dev != 0 {
		if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeLink {
			return nil, fmt.Errorf("serialize %s: a device record on a non-regular file", hdr.Name)
		}
		hdr.Typeflag, hdr.Size, hdr.Linkname = tar.TypeChar, 0, ""
		if o.dev == 'b' {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(o.rdev)), int64(unix.Minor(o.rdev))
	}
	if o.uid != nil {
		hdr.Uid = *o.uid
	}
	if o.gid != nil {
		hdr.Gid = *o.gid
	}
	return hdr, nil
}

// setOverride merges o into the record of p (a regular file or directory).
func setOverride(p string, o override) error {
	old, _, err := readOverride(p)
	if err != nil {
		return err
	}
	if o.dev == 0 {
		o.dev, o.rdev = old.dev, old.rdev
	}
	if o.uid == nil {
		o.uid = old.uid
	}
	if o.gid == nil {
		o.gid = old.gid
	}
	if err := unix.Lsetxattr(p, overrideXattr, []byte(o.String()), 0); err != nil {
		return fmt.Errorf("record %s of %s: %w", o, p, err)
	}
	return nil
}

// deviceStandIn creates, where mknod is refused, the empty regular file
// that stands for a device at p (opened relative to dirfd as base).
func deviceStandIn(dirfd int, base, p string, mode uint32, rdev uint64) error {
	fd, err := unix.Openat(dirfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create stand-in for device %s: %w", base, err)
	}
	defer unix.Close(fd)
	kind := byte('c')
	if mode&unix.S_IFMT == unix.S_IFBLK {
		kind = 'b'
	}
	v := override{dev: kind, rdev: rdev}.String()
	if err := unix.Fsetxattr(fd, overrideXattr, []byte(v), 0); err != nil {
		return fmt.Errorf("record device %s as %s: %w", p, v, err)
	}
	return nil
}

// chownOrRecord gives an entry the owner uid:gid through chown, or, when
// the user namespace does not map one of the ids, the mapped ones and root
// for the others, recorded in the entry's override (path p) if it is a
// regular file or directory (canRecord). A stale owner record of an entry
// that existed before (existed) is dropped. It reports lost when the real
// owner could not be kept (a symlink or FIFO of an unmapped owner).
func chownOrRecord(chown func(uid, gid int) error, p string, uid, gid int, canRecord, existed bool) (lost bool, err error) {
	err = chown(uid, gid)
	if err == nil {
		if existed && canRecord {
			return false, dropOwnerRecord(p)
		}
		return false, nil
	}
	if errors.Is(err, unix.EPERM) {
		return false, fmt.Errorf("%w: files of other owners need root, a user namespace or the builder image's capabilities", err)
	}
	if !errors.Is(err, unix.EINVAL) {
		return false, err
	}
	var o override
	u, g := uid, gid
	if chown(uid, -1) != nil {
		o.uid, u = &uid, 0
	}
	if chown(-1, gid) != nil {
		o.gid, g = &gid, 0
	}
	if err := chown(u, g); err != nil {
		return false, err
	}
	if !canRecord {
		return true, nil
	}
	if existed {
		if err := dropOwnerRecord(p); err != nil {
			return false, err
		}
	}
	return false, setOverride(p, o)
}

// dropOwnerRecord removes the owner fields of p's record, if any.
func dropOwnerRecord(p string) error {
	o, ok, err := readOverride(p)
	if err != nil || !ok || (o.uid == nil && o.gid == nil) {
		return err
	}
	if o.dev == 0 {
		if err := unix.Lremovexattr(p, overrideXattr); err != nil && !errors.Is(err, unix.ENODATA) {
			return fmt.Errorf("drop record of %s: %w", p, err)
		}
		return nil
	}
	o.uid, o.gid = nil, nil
	if err := unix.Lsetxattr(p, overrideXattr, []byte(o.String()), 0); err != nil {
		return fmt.Errorf("record %s of %s: %w", o, p, err)
	}
	return nil
}

// Lchown gives the entry at p the owner uid:gid without following a
// symlink. In a user namespace that does not map one of the ids (a
// rootless build with a single-id mapping) a regular file or directory is
// given root and the real owner is recorded, so its layer entry keeps it;
// a symlink or FIFO then stays root's.
func Lchown(p string, uid, gid int) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return &os.PathError{Op: "lchown", Path: p, Err: err}
	}
	typ := st.Mode & unix.S_IFMT
	chown := func(u, g int) error { return unix.Lchown(p, u, g) }
	if _, err := chownOrRecord(chown, p, uid, gid, typ == unix.S_IFREG || typ == unix.S_IFDIR, true); err != nil {
		return &os.PathError{Op: "lchown", Path: p, Err: err}
	}
	return nil
}

// ErrWhiteoutRefused is wrapped by the error of a whiteout (a 0/0
// character device) the store's file system refuses: overlayfs does, so a
// store cannot live on a container's root file system.
var ErrWhiteoutRefused = errors.New("the store's file system refuses whiteouts (overlayfs, such as a container's root file system, does): keep the store on a volume (--root DIR or $XDG_DATA_HOME; the builder image declares one)")

// whiteoutError explains a failed whiteout mknod at p.
func whiteoutError(p string, err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("create whiteout %s: %w: %w", p, err, ErrWhiteoutRefused)
	}
	return fmt.Errorf("create whiteout %s: %w", p, err)
}

// FchownNew is Lchown for a regular file just created and open as fd (p
// is its path, where a user namespace's stand-in owner is recorded): a
// new file has no owner record to drop.
func FchownNew(fd int, p string, uid, gid int) error {
	chown := func(u, g int) error { return unix.Fchown(fd, u, g) }
	if _, err := chownOrRecord(chown, p, uid, gid, true, false); err != nil {
		return &os.PathError{Op: "fchown", Path: p, Err: err}
	}
	return nil
}
