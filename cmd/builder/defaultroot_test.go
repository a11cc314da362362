package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDefaultRoot: the store is $XDG_DATA_HOME/builder, else
// $HOME/.local/share/builder; without either, root's is /var/lib/builder
// and never a shared directory such as /tmp/builder, which whoever made
// it first would own.
func TestDefaultRoot(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", "/xdg")
	t.Setenv("HOME", "/home/someone")
	if got := defaultRoot(); got != "/xdg/builder" {
		t.Errorf("with XDG_DATA_HOME: %q", got)
	}
	t.Setenv("XDG_DATA_HOME", "")
	if got := defaultRoot(); got != "/home/someone/.local/share/builder" {
		t.Errorf("with HOME: %q", got)
	}
	t.Setenv("HOME", "")
	got := defaultRoot()
	if strings.HasPrefix(got, os.TempDir()) {
		t.Errorf("without HOME: %q", got)
	}
	if os.Geteuid() == 0 && got != "/var/lib/builder" {
		t.Errorf("root without HOME: %q, want /var/lib/builder", got)
	}
}

// TestE2EDefaultRootWithoutHome: an ordinary user whose environment has no
// HOME (a service, a CI step with a cleared environment) gets the store
// in the home directory the system has for it, also in the rootless
// child that re-executes as root of a user namespace; nothing in /tmp.
func TestE2EDefaultRootWithoutHome(t *testing.T) {
	u := rootlessUser(t)
	store := filepath.Join(u.home, ".local", "share", "builder")
	if _, err := os.Stat(store); err == nil {
		t.Skipf("%s already has a store at %s", u.name, store)
	}
	// Remove what the build makes: the store, and the directories above
	// it that were not there.
	made := store
	for d := filepath.Dir(store); d != u.home; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		made = d
	}
	t.Cleanup(func() { os.RemoveAll(made) })
	_, tmpBefore := os.Lstat(filepath.Join(os.TempDir(), "builder"))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, builderBin, "images")
	u.apply(cmd)
	cmd.Env = slices.DeleteFunc(cmd.Env, func(kv string) bool {
		return strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "USER=")
	})
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("builder images without HOME: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(store, "images")); err != nil || !fi.IsDir() {
		t.Errorf("no store at %s: %v\n%s", store, err, out)
	}
	if _, err := os.Lstat(filepath.Join(os.TempDir(), "builder")); err == nil && tmpBefore != nil {
		t.Errorf("a store was made in %s", filepath.Join(os.TempDir(), "builder"))
	}
}
