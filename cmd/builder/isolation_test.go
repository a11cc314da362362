package main

import (
	"slices"
	"testing"
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
