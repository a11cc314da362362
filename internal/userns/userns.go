// Package userns plans and writes the id mappings of the user namespace a
// rootless builder runs in.
//
// An ordinary user maps its own uid and gid to 0 in the namespace. With a
// subordinate range in /etc/subuid and /etc/subgid (and Debian's
// newuidmap/newgidmap, package uidmap), the range is mapped from 1 on, so
// files of any id the range covers (33, 65534, ...) keep their owners;
// without one only the single id is mapped, and every other id is
// unrepresentable in the namespace.
package userns

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// IDMap is one line of a uid_map or gid_map: Size ids from Inside (in the
// namespace) map to Outside (in the parent namespace).
type IDMap struct {
	Inside, Outside, Size uint32
}

// Range is a subordinate id range: Count ids from Start.
type Range struct {
	Start, Count uint32
}

// Plan is how the namespace's ids map to the host's.
type Plan struct {
	UIDs, GIDs []IDMap
	// SubIDs is true when subordinate ranges are mapped: the maps are
	// written by newuidmap and newgidmap, and setgroups stays allowed.
	SubIDs bool
	// Limit says, for a single-id plan, why there is no range and what
	// that costs; empty when SubIDs.
	Limit string
}

// Files are where NewPlan finds the subordinate ranges and the helpers;
// the zero value is the system's.
type Files struct {
	SubUID, SubGID       string // default /etc/subuid, /etc/subgid
	NewUIDMap, NewGIDMap string // default found on PATH
}

func (f Files) withDefaults() Files {
	if f.SubUID == "" {
		f.SubUID = "/etc/subuid"
	}
	if f.SubGID == "" {
		f.SubGID = "/etc/subgid"
	}
	if f.NewUIDMap == "" {
		f.NewUIDMap, _ = exec.LookPath("newuidmap")
	}
	if f.NewGIDMap == "" {
		f.NewGIDMap, _ = exec.LookPath("newgidmap")
	}
	return f
}

// NewPlan plans the maps of the user name (may be empty when the uid has
// no passwd entry) with host ids uid and gid.
func NewPlan(name string, uid, gid uint32, files Files) (Plan, error) {
	files = files.withDefaults()
	subU, errU := readRanges(files.SubUID, name, uid)
	subG, errG := readRanges(files.SubGID, name, uid)
	if err := errors.Join(errU, errG); err != nil {
		return Plan{}, err
	}
	single := Plan{
		UIDs: []IDMap{{0, uid, 1}},
		GIDs: []IDMap{{0, gid, 1}},
	}
	who := name
	if who == "" {
		who = strconv.FormatUint(uint64(uid), 10)
	}
	switch {
	case len(subU) == 0 || len(subG) == 0:
		single.Limit = fmt.Sprintf("%s has no subordinate id range in %s and %s", who, files.SubUID, files.SubGID)
	case files.NewUIDMap == "" || files.NewGIDMap == "":
		single.Limit = "newuidmap/newgidmap not found (apt-get install uidmap)"
	default:
		return Plan{
			UIDs:   mapsFor(uid, subU),
			GIDs:   mapsFor(gid, subG),
			SubIDs: true,
		}, nil
	}
	single.Limit += ": only uid and gid 0 exist in RUN steps; files of other owners are kept in the layers (recorded beside them) but appear owned by root, and RUN cannot switch to another user"
	return single, nil
}

// mapsFor maps own to 0 and the ranges, in order, from 1 on.
func mapsFor(own uint32, ranges []Range) []IDMap {
	out := []IDMap{{0, own, 1}}
	next := uint32(1)
	for _, r := range ranges {
		out = append(out, IDMap{next, r.Start, r.Count})
		next += r.Count
	}
	return out
}

// readRanges returns the ranges of the file path that belong to name or to
// the numeric uid. A missing file has none.
func readRanges(path, name string, uid uint32) ([]Range, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ranges, err := ParseRanges(f, name, uid)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ranges, nil
}

// ParseRanges reads /etc/subuid-format lines (OWNER:START:COUNT, OWNER a
// name or a numeric id) and returns those of name or uid, in file order.
// Ranges that overlap the owner's own id or an earlier range are skipped,
// as newuidmap would refuse the whole map for them.
func ParseRanges(r io.Reader, name string, uid uint32) ([]Range, error) {
	var out []Range
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want OWNER:START:COUNT, got %q", n, line)
		}
		if f[0] != strconv.FormatUint(uint64(uid), 10) && (name == "" || f[0] != name) {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil || count == 0 || start+count > 1<<32-1 {
			return nil, fmt.Errorf("line %d: invalid range %q", n, line)
		}
		rg := Range{uint32(start), uint32(count)}
		if overlaps(rg, Range{uid, 1}) || slices64Overlap(out, rg) {
			continue
		}
		out = append(out, rg)
	}
	return out, sc.Err()
}

func overlaps(a, b Range) bool {
	return uint64(a.Start) < uint64(b.Start)+uint64(b.Count) && uint64(b.Start) < uint64(a.Start)+uint64(a.Count)
}

func slices64Overlap(rs []Range, r Range) bool {
	for _, o := range rs {
		if overlaps(o, r) {
			return true
		}
	}
	return false
}

// Write writes the plan's maps for the process pid, which must be in a
// new user namespace and not have exec'd anything it needs root for yet:
// with newuidmap/newgidmap for subordinate ranges, else directly (after
// denying setgroups, as the kernel requires of an unprivileged writer).
func (p Plan) Write(pid int, files Files) error {
	files = files.withDefaults()
	if p.SubIDs {
		if err := runMapper(files.NewUIDMap, pid, p.UIDs); err != nil {
			return err
		}
		return runMapper(files.NewGIDMap, pid, p.GIDs)
	}
	proc := "/proc/" + strconv.Itoa(pid)
	if err := os.WriteFile(proc+"/uid_map", []byte(Format(p.UIDs)), 0); err != nil {
		return fmt.Errorf("write uid map: %w", err)
	}
	if err := os.WriteFile(proc+"/setgroups", []byte("deny"), 0); err != nil {
		return fmt.Errorf("deny setgroups: %w", err)
	}
	if err := os.WriteFile(proc+"/gid_map", []byte(Format(p.GIDs)), 0); err != nil {
		return fmt.Errorf("write gid map: %w", err)
	}
	return nil
}

func runMapper(bin string, pid int, maps []IDMap) error {
	args := []string{strconv.Itoa(pid)}
	for _, m := range maps {
		args = append(args, strconv.FormatUint(uint64(m.Inside), 10), strconv.FormatUint(uint64(m.Outside), 10), strconv.FormatUint(uint64(m.Size), 10))
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Format renders maps in the uid_map file format.
func Format(maps []IDMap) string {
	var b strings.Builder
	for _, m := range maps {
		fmt.Fprintf(&b, "%d %d %d\n", m.Inside, m.Outside, m.Size)
	}
	return b.String()
}

// ParseMap reads a /proc/PID/uid_map or gid_map.
func ParseMap(s string) ([]IDMap, error) {
	var out []IDMap
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("invalid id map line %q", line)
		}
		var v [3]uint32
		for i := range f {
			n, err := strconv.ParseUint(f[i], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("invalid id map line %q", line)
			}
			v[i] = uint32(n)
		}
		out = append(out, IDMap{v[0], v[1], v[2]})
	}
	return out, nil
}

// Contains reports whether id (inside the namespace) is mapped.
func Contains(maps []IDMap, id uint32) bool {
	for _, m := range maps {
		if id >= m.Inside && uint64(id) < uint64(m.Inside)+uint64(m.Size) {
			return true
		}
	}
	return false
}

// InUserNS reports whether the process runs in a user namespace other
// than the initial one: its uid map is not the whole identity map.
func InUserNS() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return !(len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
}

// SetgroupsAllowed reports whether setgroups(2) is allowed in the
// process's user namespace (it is denied where a single-id map was
// written without newgidmap).
func SetgroupsAllowed() bool {
	b, err := os.ReadFile("/proc/self/setgroups")
	return err != nil || strings.TrimSpace(string(b)) != "deny"
}

// Current returns the uid and gid maps of the process's user namespace.
func Current() (uids, gids []IDMap, err error) {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return nil, nil, err
	}
	if uids, err = ParseMap(string(b)); err != nil {
		return nil, nil, err
	}
	b, err = os.ReadFile("/proc/self/gid_map")
	if err != nil {
		return nil, nil, err
	}
	gids, err = ParseMap(string(b))
	return uids, gids, err
}

// Inside describes the ids a map covers in the namespace: "0-65536".
func Inside(maps []IDMap) string {
	var parts []string
	for _, m := range maps {
		if m.Size == 1 {
			parts = append(parts, strconv.FormatUint(uint64(m.Inside), 10))
			continue
		}
		parts = append(parts, fmt.Sprintf("%d-%d", m.Inside, uint64(m.Inside)+uint64(m.Size)-1))
	}
	return strings.Join(parts, ", ")
}
