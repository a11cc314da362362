package snapshot

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// A committed layer records the stat digest of its directory: a digest
// of what lstat gives for every entry (inode, size, mode, owner, link
// count, mtime and ctime) and of their names. Writing a file, changing its
// metadata or xattrs sets its ctime to the current time, which user space
// cannot set back, and adding, removing or renaming an entry changes its
// directory's; so a directory whose entries stat as they did when its
// content was hashed still holds that content, as git's index trusts a
// file whose stat is unchanged. WriteTar then copies the layer without
// hashing it again, and hashes it when anything differs.

// statRacyWindow: an entry whose ctime is this close to the moment its
// stat was taken could still change within the same timestamp tick
// without its ctime changing (git's "racy clean" entries); a layer with
// such an entry records no stat digest then. It is well above the
// kernel's coarse timestamp granularity (one jiffy, ≤ 10 ms).
const statRacyWindow = 100 * time.Millisecond

// statDigest is the stat digest of entries, or "" when one of them
// changed within statRacyWindow of statAt, the time before they were
// stat'ed.
func statDigest(entries []tarEntry, statAt time.Time) string {
	h := sha256.New()
	var b []byte
	limit := statAt.Add(-statRacyWindow).UnixNano()
	for _, e := range entries {
		st := &e.st
		if e.kind != kindOpaque && st.Ctim.Nano() >= limit {
			return ""
		}
		b = b[:0]
		b = append(b, e.name...)
		b = append(b, 0, byte(e.kind))
		for _, v := range []uint64{st.Dev, st.Ino, uint64(st.Mode), uint64(st.Nlink), uint64(st.Uid), uint64(st.Gid),
			st.Rdev, uint64(st.Size), uint64(st.Mtim.Nano()), uint64(st.Ctim.Nano())} {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
		h.Write(b)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
