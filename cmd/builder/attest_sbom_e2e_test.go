package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/attest"
)

// scannerBin is builder-sbom, built once for the tests that scan (its
// own module: ../../sbom), or $BUILDER_SBOM_SCANNER.
var scannerBin = struct {
	once sync.Once
	path string
	err  error
}{}

// useScanner makes the builder runs of t find the SBOM scanner.
func useScanner(t *testing.T) {
	t.Helper()
	if p := os.Getenv(scannerEnv); p != "" {
		return
	}
	scannerBin.once.Do(func() {
		// Below TestMain's directory, which it removes; not beside the
		// builder binary, where every build would find it.
		dir := filepath.Join(filepath.Dir(builderBin), "sbom")
		if err := os.Mkdir(dir, 0o755); err != nil {
			scannerBin.err = err
			return
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			scannerBin.err = err
			return
		}
		p := filepath.Join(dir, scannerName)
		cmd := exec.Command("go", "build", "-o", p, ".")
		cmd.Dir = filepath.Join("..", "..", "sbom")
		if out, err := cmd.CombinedOutput(); err != nil {
			scannerBin.err = err
			t.Logf("go build builder-sbom:\n%s", out)
			return
		}
		scannerBin.path = p
	})
	if scannerBin.err != nil {
		t.Fatalf("build %s: %v", scannerName, scannerBin.err)
	}
	t.Setenv(scannerEnv, scannerBin.path)
}

// debianFixture makes a small Debian root filesystem from a few packages
// of the distribution's archive (apt-get download, dpkg-deb -x, their
// control fields as dpkg's status database and file lists), builds it
// into the store as debian:fixture, and returns what dpkg-query reports
// installed there: "NAME VERSION" lines.
func debianFixture(t *testing.T, e *e2eEnv) []string {
	t.Helper()
	for _, tool := range []string{"apt-get", "dpkg-deb", "dpkg-query"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI=true but %s is missing: %v", tool, err)
			}
			t.Skipf("needs %s", tool)
		}
	}
	debs := filepath.Join(e.dir, "debs")
	rootfs := filepath.Join(e.dir, "debian", "rootfs")
	admin := filepath.Join(rootfs, "var", "lib", "dpkg")
	for _, d := range []string{debs, filepath.Join(admin, "info")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pkgs := []string{"base-files", "debianutils", "hostname", "ncurses-base", "netbase", "sensible-utils"}
	cmd := exec.Command("apt-get", append([]string{"download", "-q"}, pkgs...)...)
	cmd.Dir = debs
	if out, err := cmd.CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("apt-get download (Debian's archive): %v\n%s", err, out)
		}
		t.Skipf("apt-get download (Debian's archive): %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(debs, "*.deb"))
	sort.Strings(files)
	var status strings.Builder
	for _, deb := range files {
		run := func(args ...string) string {
			out, err := exec.Command(args[0], args[1:]...).Output()
			if err != nil {
				t.Fatalf("%v: %v", args, err)
			}
			return string(out)
		}
		run("dpkg-deb", "-x", deb, rootfs)
		control := run("dpkg-deb", "-f", deb)
		name := strings.TrimSpace(run("dpkg-deb", "-f", deb, "Package"))
		control = strings.Replace(control, "Package: "+name+"\n", "Package: "+name+"\nStatus: install ok installed\n", 1)
		status.WriteString(strings.TrimRight(control, "\n") + "\n\n")
		var list []string
		for _, p := range strings.Split(run("sh", "-c", "dpkg-deb --fsys-tarfile '"+deb+"' | tar -t"), "\n") {
			if p = strings.TrimSuffix(strings.TrimPrefix(p, "."), "/"); p != "" {
				list = append(list, p)
			}
		}
		if err := os.WriteFile(filepath.Join(admin, "info", name+".list"), []byte(strings.Join(list, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(admin, "status"), []byte(status.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("dpkg-query", "--admindir="+admin, "-W", "-f", "${Package} ${Version}\n").Output()
	if err != nil {
		t.Fatalf("dpkg-query: %v", err)
	}
	installed := strings.Fields(strings.TrimSpace(string(out)))
	var lines []string
	for i := 0; i+1 < len(installed); i += 2 {
		lines = append(lines, installed[i]+" "+installed[i+1])
	}
	if len(lines) != len(pkgs) {
		t.Fatalf("dpkg-query lists %v, want %d packages", lines, len(pkgs))
	}
	dir := filepath.Dir(rootfs)
	e.own(dir)
	e.write(dir, "Dockerfile", "FROM scratch\nCOPY rootfs/ /\n")
	e.mustRun("build", "-t", "debian:fixture", dir)
	return lines
}

// spdxDoc is what the tests read of an SPDX document.
type spdxDoc struct {
	Name         string
	CreationInfo struct{ Creators []string }
	Packages     []struct {
		Name, VersionInfo string
		ExternalRefs      []struct{ ReferenceType, ReferenceLocator string }
	}
	Files []struct{ FileName, Comment string }
}

func sbomOf(t *testing.T, raw []byte) *spdxDoc {
	t.Helper()
	var s struct{ Predicate spdxDoc }
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return &s.Predicate
}

// --sbom: the pushed index's attestation manifest holds the image's SPDX
// SBOM (first, as BuildKit orders them) beside the provenance; it lists
// the Debian packages dpkg-query reports in the image, each file placed
// in the pushed layer that holds it; builder inspect shows it.
func TestE2ESBOMDebian(t *testing.T) {
	e := newEnv(t)
	useScanner(t)
	reg := startRegistry(t)
	installed := debianFixture(t, e)
	target := reg + "/sbom/debian:v1"
	start := time.Now()
	_, errOut := e.mustRun("build", "--progress", "plain", "--sbom=true", "-t", target, "--push", e.context("FROM debian:fixture\nCOPY app /usr/local/bin/app\n", map[string]string{"app": "app\n"}))
	t.Logf("build with --sbom: %s", time.Since(start))
	if !strings.Contains(errOut, "scanning the image for its SBOM") {
		t.Errorf("build output does not say it scans:\n%s", errOut)
	}
	a := readAttested(t, target)
	if len(a.manifest.Layers) != 2 || a.manifest.Layers[0].Annotations["in-toto.io/predicate-type"] != attest.PredicateSPDX ||
		a.manifest.Layers[1].Annotations["in-toto.io/predicate-type"] != attest.PredicateSLSA1 {
		t.Fatalf("attestation layers %+v, want the SBOM then the provenance", a.manifest.Layers)
	}
	var stmt attest.Statement
	if err := json.Unmarshal(a.statements[0], &stmt); err != nil {
		t.Fatal(err)
	}
	if len(stmt.Subject) != 1 || stmt.Subject[0].Digest["sha256"] != a.image.Digest.Hex {
		t.Errorf("SBOM subjects %+v, want the image %s", stmt.Subject, a.image.Digest)
	}
	doc := sbomOf(t, a.statements[0])
	var debs []string
	for _, p := range doc.Packages {
		for _, r := range p.ExternalRefs {
			if r.ReferenceType == "purl" && strings.HasPrefix(r.ReferenceLocator, "pkg:deb/debian/"+p.Name+"@") {
				debs = append(debs, p.Name+" "+p.VersionInfo)
			}
		}
	}
	sort.Strings(debs)
	if !slices.Equal(debs, installed) {
		t.Errorf("SBOM Debian packages %v, dpkg-query reports %v", debs, installed)
	}
	if !slices.ContainsFunc(doc.CreationInfo.Creators, func(c string) bool { return strings.HasPrefix(c, "Tool: builder-") }) {
		t.Errorf("creators %v lack builder", doc.CreationInfo.Creators)
	}
	m, err := a.img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	// The files syft lists (the packages' copyrights and dpkg's file
	// lists) are all in the Debian base layer, as pushed.
	for _, f := range doc.Files {
		if f.Comment != "layerID: "+m.Layers[0].Digest.String() {
			t.Errorf("%s: comment %q, want the pushed base layer %s", f.FileName, f.Comment, m.Layers[0].Digest)
		}
	}
	if !slices.ContainsFunc(doc.Files, func(f struct{ FileName, Comment string }) bool {
		return f.FileName == "var/lib/dpkg/info/hostname.list"
	}) {
		t.Errorf("the SBOM's files %+v lack dpkg's list of hostname", doc.Files)
	}
	out, _ := e.mustRun("inspect", "--attestation", "sbom", target)
	var stored []json.RawMessage
	if err := json.Unmarshal([]byte(out), &stored); err != nil || len(stored) != 1 || !strings.Contains(string(stored[0]), `"pkg:deb/debian/hostname@`) {
		t.Errorf("inspect --attestation sbom: %v\n%.300s", err, out)
	}
}

// testSBOMScannerArgs, ported: BUILDKIT_SBOM_SCAN_STAGE and
// BUILDKIT_SBOM_SCAN_CONTEXT add SBOMs of the stages and the context,
// only when declared with ARG; --build-arg turns them off. (Upstream's
// generator image is a script; here the scanner is builder's own.)
func TestE2ESBOMScannerArgs(t *testing.T) {
	e := newEnv(t)
	useScanner(t)
	reg := startRegistry(t)
	count := func(t *testing.T, target string, want []string) {
		t.Helper()
		a := readAttested(t, target)
		var names []string
		for i, l := range a.manifest.Layers {
			if l.Annotations["in-toto.io/predicate-type"] == attest.PredicateSPDX {
				names = append(names, sbomOf(t, a.statements[i]).Name)
			}
		}
		if !slices.Equal(names, want) {
			t.Errorf("%s SBOMs %v, want %v", target, names, want)
		}
	}
	dir := e.context("FROM scratch as base\nCOPY <<EOF /foo\ndata\nEOF\nFROM base\n", nil)
	target := reg + "/buildkit/testsbomscannerargstarget1:latest"
	e.mustRun("build", "--sbom=true", "--build-arg", "BUILDKIT_SBOM_SCAN_CONTEXT=true", "--build-arg", "BUILDKIT_SBOM_SCAN_STAGE=true", "-t", target, "--push", dir)
	count(t, target, []string{"sbom"})

	dir = e.context(`
ARG BUILDKIT_SBOM_SCAN_CONTEXT=true

FROM scratch as file
ARG BUILDKIT_SBOM_SCAN_STAGE=true
COPY <<EOF /file
data
EOF

FROM scratch as base
ARG BUILDKIT_SBOM_SCAN_STAGE=true
COPY --from=file /file /foo

FROM scratch as base2
ARG BUILDKIT_SBOM_SCAN_STAGE=true
COPY --from=file /file /bar
RUN non-existent-command-would-fail

FROM base
ARG BUILDKIT_SBOM_SCAN_STAGE=true
`, nil)
	target = reg + "/buildkit/testsbomscannertarget2:latest"
	e.mustRun("build", "--sbom=true", "-t", target, "--push", dir)
	count(t, target, []string{"sbom", "sbom-base", "sbom-context", "sbom-file"})

	target = reg + "/buildkit/testsbomscannertarget3:latest"
	e.mustRun("build", "--sbom=true", "--build-arg", "BUILDKIT_SBOM_SCAN_STAGE=false", "--build-arg", "BUILDKIT_SBOM_SCAN_CONTEXT=false", "-t", target, "--push", dir)
	count(t, target, []string{"sbom"})
}

// Without the scanner, --sbom says what to build and where it looks.
func TestE2ESBOMNoScanner(t *testing.T) {
	e := newEnv(t)
	t.Setenv(scannerEnv, filepath.Join(e.dir, "nowhere", scannerName))
	_, errOut, err := e.run("build", "--sbom=true", e.context("FROM scratch\nENV A=b\n", nil))
	if err == nil || !strings.Contains(errOut, "needs the SBOM scanner builder-sbom") {
		t.Errorf("--sbom with a missing scanner: %v\n%s", err, errOut)
	}
}
