package main

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFixUmask: under any user umask, what a command creates gets the
// mode the fixed 022 gives, and withUserUmask creates with the user's.
// Not parallel: the umask is the process's (parallel tests wait for the
// sequential ones to finish).
func TestFixUmask(t *testing.T) {
	saved := unix.Umask(0o077)
	savedUser := userUmask
	t.Cleanup(func() {
		unix.Umask(saved)
		userUmask = savedUser
	})
	fixUmask()
	if userUmask != 0o077 {
		t.Errorf("userUmask = %o, want 077", userUmask)
	}
	dir := t.TempDir()
	mode := func(p string) os.FileMode {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if m := mode(filepath.Join(dir, "a")); m != 0o755 {
		t.Errorf("MkdirAll 0755 under user umask 077 after fixUmask: %o, want 755", m)
	}
	if m := mode(filepath.Join(dir, "f")); m != 0o644 {
		t.Errorf("WriteFile 0666 after fixUmask: %o, want 644", m)
	}
	err := withUserUmask(func() error {
		if err := os.Mkdir(filepath.Join(dir, "user"), 0o777); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "user", "f"), nil, 0o666)
	})
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(filepath.Join(dir, "user")); m != 0o700 {
		t.Errorf("Mkdir 0777 in withUserUmask: %o, want 700", m)
	}
	if m := mode(filepath.Join(dir, "user", "f")); m != 0o600 {
		t.Errorf("WriteFile 0666 in withUserUmask: %o, want 600", m)
	}
	if got := unix.Umask(0o022); got != fixedUmask {
		t.Errorf("umask after withUserUmask = %o, want %o", got, fixedUmask)
	}
}
