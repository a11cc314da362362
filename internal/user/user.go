// Package user resolves the USER instruction and COPY/ADD --chown values of
// a Dockerfile against the /etc/passwd and /etc/group files of a root
// filesystem, with the semantics of runc (RUN) and BuildKit (--chown).
//
// Files are opened through a rooted join (securejoin), so a rootfs whose
// /etc is an absolute symlink resolves inside the rootfs and never on the
// host. All functions are safe for concurrent use.
package user

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// Identity is the resolved user of a RUN step.
type Identity struct {
	Name           string // passwd name; empty for a numeric uid without entry
	UID, GID       uint32
	AdditionalGids []uint32 // supplementary groups (implicit-group form only)
	Home           string   // passwd home; "/" without entry
}

// entry is one parsed line of passwd or group: the colon-separated fields.
type entry struct {
	fields []string
	line   int
}

// Resolve resolves a USER spec ("name", "uid", "name:group", "uid:gid",
// "name:gid", "uid:group") against the rootfs, like runc's GetExecUser: a
// numeric uid without a passwd entry gets gid 0 and home "/"; an unknown
// name is an error; supplementary groups (the groups listing the user's
// name) are set only when the spec names no group. An empty spec is root.
func Resolve(rootfs, spec string) (Identity, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" {
		userPart = "0"
	}
	id, err := resolveUser(rootfs, userPart)
	if err != nil {
		return Identity{}, err
	}
	if hasGroup && groupPart != "" {
		gid, err := resolveGroup(rootfs, groupPart)
		if err != nil {
			return Identity{}, err
		}
		id.GID = gid
		return id, nil
	}
	if id.Name != "" {
		id.AdditionalGids, err = memberGroups(rootfs, id.Name)
		if err != nil {
			return Identity{}, err
		}
	}
	return id, nil
}

// ResolveChown resolves a COPY/ADD --chown spec with BuildKit's rules: a
// numeric user needs no passwd file and, without a group, gets gid = uid; a
// user name without a group gets the user's primary group; an empty group
// ("user:", "1000:") is no group (llb.WithUser), an empty user (":50",
// ":staff", ":") is root with gid 0 unless a group is named; names must
// exist in the rootfs's passwd/group files.
func ResolveChown(rootfs, spec string) (uid, gid int, err error) {
	return resolveChown(rootfs, spec, false)
}

// ResolveChownWindows is ResolveChown for a Windows image, whose users
// (ContainerUser, ContainerAdministrator) are no entries of /etc/passwd:
// a name the passwd or group file lacks is not an error but no id (root's
// for a user; a missing group leaves the user's), as BuildKit on Linux
// resolves names for its file operations. Windows takes a file's access
// from the security descriptor its layer gives it, not from these ids.
func ResolveChownWindows(rootfs, spec string) (uid, gid int, err error) {
	return resolveChown(rootfs, spec, true)
}

func resolveChown(rootfs, spec string, missingIsNone bool) (uid, gid int, err error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	switch n, numeric := parseID(userPart); {
	case userPart == "": // root with gid 0, as buildkitd makes it
	case numeric:
		uid, gid = int(n), int(n)
	default:
		id, err := lookupUserName(rootfs, userPart)
		if missingIsNone && errors.Is(err, errNoEntry) {
			break
		}
		if err != nil {
			return 0, 0, err
		}
		uid, gid = int(id.UID), int(id.GID)
	}
	if hasGroup && groupPart != "" {
		g, err := resolveGroup(rootfs, groupPart)
		if missingIsNone && errors.Is(err, errNoEntry) {
			return uid, gid, nil
		}
		if err != nil {
			return 0, 0, err
		}
		gid = int(g)
	}
	return uid, gid, nil
}

// errNoEntry is matched by the error of a name the passwd or group file
// lacks.
var errNoEntry = errors.New("no matching entries")

func resolveUser(rootfs, spec string) (Identity, error) {
	uid, numeric := parseID(spec)
	if !numeric {
		return lookupUserName(rootfs, spec)
	}
	entries, path, err := readDB(rootfs, "/etc/passwd")
	if err != nil {
		return Identity{}, err
	}
	for _, e := range entries {
		if len(e.fields) > 2 && e.fields[2] == spec {
			return identityOf(path, e)
		}
	}
	return Identity{UID: uid, GID: 0, Home: "/"}, nil
}

func lookupUserName(rootfs, name string) (Identity, error) {
	entries, path, err := readDB(rootfs, "/etc/passwd")
	if err != nil {
		return Identity{}, err
	}
	for _, e := range entries {
		if e.fields[0] == name {
			return identityOf(path, e)
		}
	}
	return Identity{}, fmt.Errorf("unable to find user %s: %w in passwd file", name, errNoEntry)
}

func identityOf(path string, e entry) (Identity, error) {
	if len(e.fields) < 4 {
		return Identity{}, fmt.Errorf("parse %s:%d: want at least 4 fields", path, e.line)
	}
	uid, ok1 := parseID(e.fields[2])
	gid, ok2 := parseID(e.fields[3])
	if !ok1 || !ok2 {
		return Identity{}, fmt.Errorf("parse %s:%d: invalid uid or gid", path, e.line)
	}
	home := "/"
	if len(e.fields) > 5 && e.fields[5] != "" {
		home = e.fields[5]
	}
	return Identity{Name: e.fields[0], UID: uid, GID: gid, Home: home}, nil
}

func resolveGroup(rootfs, spec string) (uint32, error) {
	if gid, ok := parseID(spec); ok {
		return gid, nil
	}
	entries, path, err := readDB(rootfs, "/etc/group")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		if e.fields[0] != spec {
			continue
		}
		if len(e.fields) < 3 {
			return 0, fmt.Errorf("parse %s:%d: want at least 3 fields", path, e.line)
		}
		gid, ok := parseID(e.fields[2])
		if !ok {
			return 0, fmt.Errorf("parse %s:%d: invalid gid %q", path, e.line, e.fields[2])
		}
		return gid, nil
	}
	return 0, fmt.Errorf("unable to find group %s: %w in group file", spec, errNoEntry)
}

// memberGroups returns the gids of the groups whose member list names user,
// in file order, skipping malformed lines as runc does.
func memberGroups(rootfs, name string) ([]uint32, error) {
	entries, _, err := readDB(rootfs, "/etc/group")
	if err != nil {
		return nil, err
	}
	var gids []uint32
	for _, e := range entries {
		if len(e.fields) < 4 {
			continue
		}
		gid, ok := parseID(e.fields[2])
		if !ok {
			continue
		}
		for _, m := range strings.Split(e.fields[3], ",") {
			if strings.TrimSpace(m) == name {
				gids = append(gids, gid)
				break
			}
		}
	}
	return gids, nil
}

// readDB reads a passwd-style file of the rootfs. A missing file is an empty
// database. It returns the host path for error messages.
func readDB(rootfs, name string) ([]entry, string, error) {
	path, err := securejoin.SecureJoin(rootfs, name)
	if err != nil {
		return nil, name, fmt.Errorf("resolve %s in rootfs: %w", name, err)
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, path, nil
	}
	if err != nil {
		return nil, path, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	var entries []entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		entries = append(entries, entry{fields: strings.Split(line, ":"), line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, path, fmt.Errorf("read %s: %w", path, err)
	}
	return entries, path, nil
}

// parseID parses a decimal uid/gid that fits in uint32.
func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}
