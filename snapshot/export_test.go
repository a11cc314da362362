package snapshot

import "encoding/binary"

// CapXattrForTest is a revision-2 security.capability value granting
// cap_net_raw (permitted and effective), for the tests of both packages.
func CapXattrForTest() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000001)
	binary.LittleEndian.PutUint32(b[4:], 1<<13)
	return string(b)
}

// WithoutLowerdirAppend makes Mount take the path of a kernel before
// Linux 6.8 (no fsconfig "lowerdir+") until the test ends.
func WithoutLowerdirAppend(t interface{ Cleanup(func()) }) {
	was := overlayFsconfig
	overlayFsconfig = func([]string, string) error { return errNoLowerdirAppend }
	t.Cleanup(func() { overlayFsconfig = was })
}
