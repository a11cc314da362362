// Package outfile decides how builder writes a file a user names (save
// -o, an archive's dest=, --iidfile, --metadata-file, builds export -o).
// A regular file, or nothing yet, is replaced atomically: a temporary
// file beside it, renamed over it; so is a symlink to a file (the link is
// replaced, its target left alone: a link planted at the destination
// never redirects the write). A character device or a pipe already there,
// or named by a symlink (/dev/null, /dev/stdout, a FIFO), is written in
// place: renamed over, /dev/null would become a regular file for every
// program on the machine. A directory or a block device is an error.
package outfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Target reports whether path is to be written in place rather than
// replaced.
func Target(path string) (inPlace bool, err error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil // nothing there, or a dangling symlink
	case err != nil:
		return false, err
	case fi.Mode().IsRegular():
		return false, nil
	case fi.IsDir():
		return false, fmt.Errorf("%s is a directory", path)
	case fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0:
		return false, fmt.Errorf("%s is a block device: refusing to write an archive onto it", path)
	}
	return true, nil
}
