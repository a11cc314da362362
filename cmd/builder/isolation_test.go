package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseIsolation(t *testing.T) {
	for in, want := range map[string]string{
		"": "auto", "default": "auto", "auto": "auto",
		"namespaces": "namespaces", "rootless": "rootless", "chroot": "chroot",
		"hyperv": "", "process": "", "Rootless": "",
	} {
		got, err := parseIsolation(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("parseIsolation(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestIsolationArg(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-t", "x", "."}, ""},
		{[]string{"--isolation", "chroot", "."}, "chroot"},
		{[]string{"--isolation=rootless", "."}, "rootless"},
		{[]string{"--network", "none", "--isolation=chroot", "--isolation", "auto", "."}, "auto"},
		{[]string{"--", "--isolation", "chroot"}, ""},
		{[]string{"--isolation"}, ""},
	} {
		if got := isolationArg(tc.args); got != tc.want {
			t.Errorf("isolationArg(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestWithEnv(t *testing.T) {
	got := withEnv([]string{"A=1", "_BUILDER_USERNS=wait", "B=2", "_BUILDER_USERNS=x"}, "_BUILDER_USERNS=1")
	want := []string{"A=1", "B=2", "_BUILDER_USERNS=1"}
	if !slices.Equal(got, want) {
		t.Errorf("withEnv = %q, want %q", got, want)
	}
}

// TestUsernsDeniedHint: a mount refused in the user namespace on a host
// whose AppArmor gives unprivileged user namespaces no capabilities
// (Ubuntu 23.10+) says so and how to allow builder; otherwise no hint.
func TestUsernsDeniedHint(t *testing.T) {
	dir := t.TempDir()
	on, off := filepath.Join(dir, "on"), filepath.Join(dir, "off")
	if err := os.WriteFile(on, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(off, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eperm := fmt.Errorf("mount: %w", unix.EPERM)
	if h := usernsDeniedHint(eperm, on); !strings.Contains(h, "apparmor_restrict_unprivileged_userns=1") || !strings.Contains(h, "AppArmor profile") {
		t.Errorf("AppArmor restricting: hint %q", h)
	}
	for name, c := range map[string]struct {
		err    error
		sysctl string
	}{
		"switch off":      {eperm, off},
		"no switch":       {eperm, filepath.Join(dir, "missing")},
		"another refusal": {fmt.Errorf("mount: %w", unix.EINVAL), on},
	} {
		if h := usernsDeniedHint(c.err, c.sysctl); h != "" {
			t.Errorf("%s: hint %q, want none", name, h)
		}
	}
}
