package buildcontext

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moby/patternmatcher/ignorefile"
)

// ReadIgnore returns the ignore patterns of a build: "<Dockerfile>.dockerignore"
// beside the Dockerfile when it exists (dockerfilePath may be empty), else
// "<contextDir>/.dockerignore", else none. Patterns are parsed with
// ignorefile.ReadAll: comments and blank lines dropped, paths cleaned, a
// leading "/" stripped, "!" exceptions kept. A file larger than
// MaxFileSize is a *TooLargeError.
func ReadIgnore(contextDir, dockerfilePath string) ([]string, error) {
	var candidates []string
	if dockerfilePath != "" && dockerfilePath != "-" {
		candidates = append(candidates, dockerfilePath+".dockerignore")
	}
	candidates = append(candidates, filepath.Join(contextDir, ".dockerignore"))
	for _, p := range candidates {
		patterns, err := readIgnoreFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		return patterns, err
	}
	return nil, nil
}

func readIgnoreFile(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("open ignore file %s: %w", p, err)
	}
	defer f.Close()
	// As BuildKit, an oversized ignore file is an error, not skipped.
	data, err := ReadLimited(f, filepath.Base(p))
	if IsTooLarge(err) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("read ignore file %s: %w", p, err)
	}
	patterns, err := ignorefile.ReadAll(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("read ignore file %s: %w", p, err)
	}
	return patterns, nil
}
