package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/internal/buildcontext"
)

// TestReadDockerfileTooLarge: a Dockerfile over BuildKit's limit is
// refused with BuildKit's message, whichever way it is given; one at the
// limit is read.
func TestReadDockerfileTooLarge(t *testing.T) {
	big := []byte("FROM scratch\n" + strings.Repeat("#", buildcontext.MaxFileSize))
	atLimit := big[:buildcontext.MaxFileSize]
	dir := t.TempDir()
	for name, data := range map[string][]byte{"Dockerfile": big, "app.Dockerfile": big, "ok.Dockerfile": atLimit} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, file string
		stdin      []byte
		want       string // error; "" reads the file
	}{
		{"context Dockerfile", "", nil, "failed to read dockerfile: Dockerfile exceeds maximum allowed size of 16777216 bytes"},
		{"-f path", filepath.Join(dir, "app.Dockerfile"), nil, "failed to read dockerfile: app.Dockerfile exceeds maximum allowed size of 16777216 bytes"},
		{"-f -", "-", big, "failed to read dockerfile: Dockerfile exceeds maximum allowed size of 16777216 bytes"},
		{"at the limit", filepath.Join(dir, "ok.Dockerfile"), nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &app{stdin: bytes.NewReader(tc.stdin)}
			data, _, _, err := readDockerfile(a, tc.file, dir)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.want == "" && len(data) != buildcontext.MaxFileSize:
				t.Errorf("read %d bytes, want %d", len(data), buildcontext.MaxFileSize)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
