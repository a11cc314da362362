package buildcontext

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadLimited(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		size int
		want string // error; "" for none
	}{
		{"empty", 0, ""},
		{"small", 100, ""},
		{"at the limit", MaxFileSize, ""},
		{"one byte over", MaxFileSize + 1, "Dockerfile exceeds maximum allowed size of 16777216 bytes"},
		{"far over", MaxFileSize + 4096, "Dockerfile exceeds maximum allowed size of 16777216 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := bytes.Repeat([]byte{'x'}, tc.size)
			got, err := ReadLimited(bytes.NewReader(in), "Dockerfile")
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case tc.want == "" && !bytes.Equal(got, in):
				t.Errorf("read %d bytes, want %d", len(got), len(in))
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Errorf("error %v, want %q", err, tc.want)
			case tc.want != "" && !IsTooLarge(err):
				t.Errorf("IsTooLarge(%v) = false", err)
			}
		})
	}
}

// TestReadIgnoreTooLarge: an ignore file over the limit fails the build
// (BuildKit does not skip it), named as BuildKit names it.
func TestReadIgnoreTooLarge(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("# "+strings.Repeat("x", 4093)+"\n", MaxFileSize/4096+1)
	for _, tc := range []struct {
		name, file, dockerfile, want string
	}{
		{"context", ".dockerignore", "", ".dockerignore exceeds maximum allowed size of 16777216 bytes"},
		{"dockerfile's own", "app.Dockerfile.dockerignore", "app.Dockerfile", "app.Dockerfile.dockerignore exceeds maximum allowed size of 16777216 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			mustWrite(t, filepath.Join(dir, tc.file), big)
			df := ""
			if tc.dockerfile != "" {
				df = filepath.Join(dir, tc.dockerfile)
			}
			_, err := ReadIgnore(dir, df)
			if err == nil || err.Error() != tc.want {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
