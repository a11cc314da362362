package snapshot

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"time"

	"golang.org/x/sys/unix"
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
// such an entry records no stat digest then. Coarse timestamps advance
// every jiffy (≤ 10 ms); an entry whose ctime has no nanoseconds may come
// from a file system that keeps whole seconds (ext4 with small inodes),
// and gets statCoarseWindow.
const (
	statRacyWindow   = 20 * time.Millisecond
	statCoarseWindow = 2 * time.Second
)

// racyLimit is the newest ctime (ns) an entry stat'ed at statAt may have
// and be trusted.
func racyLimit(st *unix.Stat_t, statAt time.Time) int64 {
	if st.Ctim.Nsec == 0 {
		return statAt.Add(-statCoarseWindow).UnixNano()
	}
	return statAt.Add(-statRacyWindow).UnixNano()
}

// statDigest is the stat digest of entries, or "" when one of them
// changed within its racy window of statAt, the time before they were
// stat'ed.
func statDigest(entries []tarEntry, statAt time.Time) string {
	h := sha256.New()
	var b []byte
	for _, e := range entries {
		st := &e.st
		if e.kind != kindOpaque && st.Ctim.Nano() >= racyLimit(st, statAt) {
			return ""
		}
		b = b[:0]
		b = append(b, e.name...)
		b = append(b, 0, byte(e.kind))
		for _, v := range statFields(st) {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
		h.Write(b)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// statFields are the fields of st that the stat digest covers.
func statFields(st *unix.Stat_t) [10]uint64 {
	return [10]uint64{st.Dev, st.Ino, uint64(st.Mode), uint64(st.Nlink), uint64(st.Uid), uint64(st.Gid),
		st.Rdev, uint64(st.Size), uint64(st.Mtim.Nano()), uint64(st.Ctim.Nano())}
}

// sameStat reports whether a and b agree on every field the stat digest
// covers.
func sameStat(a, b *unix.Stat_t) bool { return statFields(a) == statFields(b) }

// racyWait is how long after statAt entries changed just before it must
// be stat'ed again to leave statRacyWindow: 0 when none is racy, and
// when one is racy by statCoarseWindow only (not worth waiting for).
func racyWait(entries []tarEntry, statAt time.Time) time.Duration {
	var newest int64
	for _, e := range entries {
		if e.kind == kindOpaque || e.st.Ctim.Nsec == 0 {
			continue
		}
		newest = max(newest, e.st.Ctim.Nano())
	}
	wait := time.Duration(newest+int64(statRacyWindow)-statAt.UnixNano()) + time.Millisecond
	if newest == 0 || wait <= time.Millisecond {
		return 0
	}
	return min(wait, statRacyWindow+time.Millisecond)
}
