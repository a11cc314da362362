package cache

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestOpenCreatesPrivateDirs(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	if err := os.MkdirAll(filepath.Join(root, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Root() != root {
		t.Errorf("Root() = %q, want %q", s.Root(), root)
	}
	for _, d := range append([]string{""}, subdirs...) {
		fi, err := os.Stat(filepath.Join(root, d))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o700 {
			t.Errorf("%s: mode %o, want 700", d, got)
		}
	}
}

func TestOpenRejectsBadRoot(t *testing.T) {
	if _, err := Open(""); err == nil {
		t.Error("Open(\"\") succeeded")
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(file); err == nil {
		t.Error("Open(regular file) succeeded")
	}
}

func TestOpenCleansTemp(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	tmp := filepath.Join(root, "tmp")
	old := time.Now().Add(-2 * time.Hour)
	recent := time.Now().Add(-2 * time.Minute)
	files := map[string]struct {
		mtime time.Time
		keep  bool
	}{
		"self-recent":                        {time.Now(), true},
		strconv.Itoa(os.Getpid()) + ".live":  {recent, true},
		strconv.Itoa(os.Getpid()) + ".stale": {old, false},
		"999999999.deadpid":                  {recent, false},
		"999999998.fresh-deadpid":            {time.Now(), true},
		"1.initpid":                          {recent, true},
	}
	for name, f := range files {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, f.mtime, f.mtime); err != nil {
			t.Fatal(err)
		}
	}
	s, err = Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for name, f := range files {
		_, err := os.Stat(filepath.Join(tmp, name))
		if kept := err == nil; kept != f.keep {
			t.Errorf("%s: kept=%v, want %v", name, kept, f.keep)
		}
	}
}
