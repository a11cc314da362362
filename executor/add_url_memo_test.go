package executor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/cache"
)

func TestStoreURLMemo(t *testing.T) {
	c, err := cache.Open(filepath.Join(t.TempDir(), "root"))
	copyCheck(t, err)
	defer c.Close()
	m := storeURLMemo{c}
	const url = "https://user:secret@example.com/f"
	if _, ok := m.Get(t.Context(), url); ok {
		t.Fatal("record before any Put")
	}
	rec := addURLRecord{ETag: `"x"`, Digest: "sha256:00", LastModified: "Thu, 02 Jan 2020 03:04:05 GMT"}
	copyCheck(t, m.Put(t.Context(), url, rec))
	if got, ok := m.Get(t.Context(), url); !ok || got != rec {
		t.Errorf("Get = %+v, %v; want %+v", got, ok, rec)
	}
	ents, err := os.ReadDir(c.AreaPath(cache.URLs))
	copyCheck(t, err)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(c.AreaPath(cache.URLs), e.Name()))
		if strings.Contains(e.Name()+string(b), "secret") {
			t.Errorf("the URL's credentials reached the store: %s %s", e.Name(), b)
		}
	}
	copyCheck(t, os.WriteFile(filepath.Join(c.AreaPath(cache.URLs), m.name(url)), []byte("{bad"), 0o600))
	if _, ok := m.Get(t.Context(), url); ok {
		t.Error("a corrupt record was used")
	}
}
