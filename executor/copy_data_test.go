package executor

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCopyError: a kernel copy that failed writing names the destination
// (in the store: what a user must free or fix), any other the source.
func TestCopyError(t *testing.T) {
	dst, src := copyFD{name: "/store/active/x/upper/big.bin"}, copyFD{name: "/ctx/big.bin"}
	for _, c := range []struct {
		err  error
		path string
	}{
		{unix.ENOSPC, dst.name}, {unix.EDQUOT, dst.name}, {unix.EROFS, dst.name}, {unix.EFBIG, dst.name},
		{unix.EIO, src.name}, {unix.EACCES, src.name},
	} {
		var pe *os.PathError
		if err := copyError(dst, src, c.err); !errors.As(err, &pe) || pe.Path != c.path || !errors.Is(err, c.err) {
			t.Errorf("copyError(%v) = %v, want it to name %s", c.err, err, c.path)
		}
	}
}
