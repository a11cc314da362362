// Package outfile decides how builder writes a file a user names (save
// -o, an archive's dest=, --iidfile, --metadata-file, builds export -o).
// A regular file, or nothing yet, is replaced atomically: a temporary
// file beside it, renamed over it. Anything else already there — a
// device such as /dev/null, /dev/stdout's pipe or terminal, a named pipe
// — is written in place: renamed over, /dev/null would become a regular
// file for every program on the machine.
package outfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Target returns the path to write for path and whether it is to be
// written in place. A symlink is followed (its target is replaced, not the
// link); a directory is an error.
func Target(path string) (target string, inPlace bool, err error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return path, false, nil
	case err != nil:
		return "", false, err
	case fi.IsDir():
		return "", false, fmt.Errorf("%s is a directory", path)
	case !fi.Mode().IsRegular():
		return path, true, nil
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", false, err
	}
	return real, false, nil
}
