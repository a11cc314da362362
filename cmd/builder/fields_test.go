package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Flag values are one CSV record, as buildx reads them: a field in double
// quotes may hold a comma (a secret's file name, a cache directory).
func TestCSVFields(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "a,b.txt")
	if err := os.WriteFile(src, []byte("s3cr3t"), 0o600); err != nil {
		t.Fatal(err)
	}
	id, data, err := readSecret(`id=tok,"src=` + src + `"`)
	if err != nil || id != "tok" || string(data) != "s3cr3t" {
		t.Errorf("secret from %q: %q %q %v", src, id, data, err)
	}
	cacheDir := filepath.Join(dir, "c,d")
	c, err := parseCacheSpec(`type=local,"dest=`+cacheDir+`"`, cacheExport)
	if err != nil || c.loc.Dir != cacheDir {
		t.Errorf("cache-to dest %q: %+v %v", cacheDir, c.loc, err)
	}
	if _, err := csvFields(`type=local,"dest=x`); err == nil || !strings.Contains(err.Error(), "parse") {
		t.Errorf("unterminated quote: %v, want a parse error", err)
	}
}
