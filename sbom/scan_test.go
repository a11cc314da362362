package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A root filesystem with a Debian and an Alpine package database, a Go
// binary, npm, pip and gem lockfiles: the scan lists each one's packages
// with their package URLs, as BuildKit's syft scanner does.
func TestScanFindsPackages(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "core", "sbom")
	extras := filepath.Join(root, "extras")
	dest := filepath.Join(root, "out")
	exe, err := os.Executable() // a Go binary: its build information lists syft
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"etc/os-release": "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"13\"\nID=debian\n",
		"var/lib/dpkg/status": "Package: base-files\nStatus: install ok installed\nPriority: required\nSection: admin\nMaintainer: x <x@x>\nArchitecture: amd64\nVersion: 13.8\nDescription: base files\n\n" +
			"Package: hostname\nStatus: install ok installed\nPriority: required\nSection: admin\nMaintainer: x <x@x>\nArchitecture: amd64\nVersion: 3.25\nDescription: hostname\n",
		"lib/apk/db/installed":  "P:musl\nV:1.2.5-r0\nA:x86_64\nT:the musl c library\n\n",
		"app/package-lock.json": `{"name":"app","version":"1.0.0","lockfileVersion":3,"packages":{"":{"name":"app","version":"1.0.0"},"node_modules/left-pad":{"version":"1.3.0"}}}`,
		"app/requirements.txt":  "requests==2.31.0\n",
		"app/Gemfile.lock":      "GEM\n  remote: https://rubygems.org/\n  specs:\n    rake (13.1.0)\n\nPLATFORMS\n  ruby\n\nDEPENDENCIES\n  rake\n",
	}
	for name, content := range files {
		write(t, filepath.Join(src, name), []byte(content))
	}
	write(t, filepath.Join(src, "usr/local/bin/gotool"), bin)
	write(t, filepath.Join(extras, "sbom-build", "app", "requirements.txt"), []byte("flask==3.0.0\n"))
	if err := os.MkdirAll(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{envSource: src, envDestination: dest, envSourceExtras: extras}
	if err := run(t.Context(), func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	core := purls(t, filepath.Join(dest, "sbom.spdx.json"), "sbom")
	for _, want := range []string{
		"pkg:deb/debian/base-files@13.8", "pkg:deb/debian/hostname@3.25", "pkg:apk/", "pkg:golang/github.com/anchore/syft@",
		"pkg:npm/left-pad@1.3.0", "pkg:pypi/requests@2.31.0", "pkg:gem/rake@13.1.0",
	} {
		if !hasPrefix(core, want) {
			t.Errorf("image SBOM lacks %s; it lists %v", want, core)
		}
	}
	if stage := purls(t, filepath.Join(dest, "sbom-build.spdx.json"), "sbom-build"); !hasPrefix(stage, "pkg:pypi/flask@3.0.0") || hasPrefix(stage, "pkg:deb/") {
		t.Errorf("stage SBOM %v, want flask only", stage)
	}
}

// Without the protocol's required variables the scanner fails plainly.
func TestScanNeedsVariables(t *testing.T) {
	if err := run(t.Context(), func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), envDestination) {
		t.Errorf("run without variables: %v", err)
	}
}

func write(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// purls reads a statement the scanner wrote and returns its SPDX
// document's package URLs, checking the statement and document names.
func purls(t *testing.T, p, name string) []string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Type          string `json:"_type"`
		PredicateType string
		Predicate     struct {
			SPDXVersion string
			Name        string
			Packages    []struct {
				ExternalRefs []struct{ ReferenceType, ReferenceLocator string }
			}
		}
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.Type != "https://in-toto.io/Statement/v1" || s.PredicateType != "https://spdx.dev/Document" || !strings.HasPrefix(s.Predicate.SPDXVersion, "SPDX-2.") || s.Predicate.Name != name {
		t.Errorf("%s: statement %s %s, document %s %q", p, s.Type, s.PredicateType, s.Predicate.SPDXVersion, s.Predicate.Name)
	}
	var out []string
	for _, pkg := range s.Predicate.Packages {
		for _, r := range pkg.ExternalRefs {
			if r.ReferenceType == "purl" {
				out = append(out, r.ReferenceLocator)
			}
		}
	}
	return out
}

func hasPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}
