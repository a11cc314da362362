package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/exporter"
	"github.com/builder-dev/builder/internal/attest"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// buildx's default: a push gets a min-mode provenance; an OCI archive of
// the same build and the local store get none (inline-only);
// $BUILDX_NO_DEFAULT_ATTESTATIONS and --provenance=false turn it off.
func TestE2EProvenanceDefault(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	dir := e.context("FROM busybox:fixture\nRUN echo d > /d\n", nil)
	oci := filepath.Join(e.dir, "default.tar")
	ref := reg + "/default/app:v1"
	e.mustRun("build", "--build-arg", "FOO=bar", "-t", ref, "--push", "-o", "type=oci,dest="+oci, dir)
	a := readAttested(t, ref)
	pred := predicateOf(t, a.statement(t, attest.PredicateSLSA1))
	if _, ok := pred.BuildDefinition.ExternalParameters.Request.Args["build-arg:FOO"]; ok || pred.BuildDefinition.InternalParameters.BuildConfig != nil {
		t.Errorf("default provenance is not min mode: %+v", pred.BuildDefinition)
	}
	if idx := ociIndexOf(t, oci); idx.Manifests[0].MediaType != types.OCIManifestSchema1 || idx.Manifests[0].Digest != a.image.Digest {
		t.Errorf("OCI output %+v: want the plain image %s (the default provenance is inline-only)", idx.Manifests[0], a.image.Digest)
	}
	if out, _ := e.mustRun("inspect", ref); strings.Contains(out, `"attestations"`) {
		t.Errorf("the local store kept the default provenance:\n%s", out)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  string
	}{
		{"no-default", nil, "1"},
		{"provenance-false", []string{"--provenance=false"}, ""},
		{"attest-disabled", []string{"--attest", "type=provenance,disabled=true"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("BUILDX_NO_DEFAULT_ATTESTATIONS", tc.env)
			r := reg + "/default/" + tc.name + ":v1"
			mustRunIn(t, e, append(append([]string{"build"}, tc.args...), "-t", r, "--push", dir)...)
			if m := mustManifestDesc(t, r); m.MediaType != types.OCIManifestSchema1 {
				t.Errorf("%s is a %s, want a plain image manifest", r, m.MediaType)
			}
		})
	}
}

func mustManifestDesc(t *testing.T, ref string) *remote.Descriptor {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// An asked-for provenance goes everywhere the image goes: an OCI archive
// holds the index (its statement names the archive's manifest and the
// tags), the local store keeps it beside the image (builder inspect), and
// the metadata file names the index as BuildKit does.
func TestE2EProvenanceOCIAndInspect(t *testing.T) {
	e := newEnv(t)
	dir := e.context("FROM busybox:fixture\nRUN echo o > /o\n", nil)
	oci, md := filepath.Join(e.dir, "prov.tar"), filepath.Join(e.dir, "md.json")
	e.mustRun("build", "--attest", "type=provenance,mode=max", "-t", "app:v1", "--metadata-file", md, "-o", "type=oci,dest="+oci, dir)
	idx := ociIndexOf(t, oci)
	if len(idx.Manifests) != 1 || idx.Manifests[0].MediaType != types.OCIImageIndex {
		t.Fatalf("OCI index.json %+v: want one image index", idx.Manifests)
	}
	var meta map[string]any
	if err := json.Unmarshal([]byte(readFileString(t, md)), &meta); err != nil {
		t.Fatal(err)
	}
	if meta["containerimage.digest"] != idx.Manifests[0].Digest.String() {
		t.Errorf("containerimage.digest %v, want the index %s", meta["containerimage.digest"], idx.Manifests[0].Digest)
	}
	layout := filepath.Join(e.dir, "layout")
	if out, err := exec.Command("sh", "-c", "mkdir -p "+layout+" && tar -xf "+oci+" -C "+layout).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var inner struct{ Manifests []struct{ Digest string } }
	blob := func(d string) []byte {
		b, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if err := json.Unmarshal(blob(idx.Manifests[0].Digest.String()), &inner); err != nil || len(inner.Manifests) != 2 {
		t.Fatalf("inner index: %v %+v", err, inner)
	}
	var am struct{ Layers []struct{ Digest string } }
	if err := json.Unmarshal(blob(inner.Manifests[1].Digest), &am); err != nil || len(am.Layers) != 1 {
		t.Fatalf("attestation manifest: %v %+v", err, am)
	}
	var stmt attest.Statement
	if err := json.Unmarshal(blob(am.Layers[0].Digest), &stmt); err != nil {
		t.Fatal(err)
	}
	wantName := "pkg:docker/app@v1?platform=" + strings.ReplaceAll(attest.PlatformString(hostPlatform()), "/", "%2F")
	if len(stmt.Subject) != 1 || stmt.Subject[0].Name != wantName || "sha256:"+stmt.Subject[0].Digest["sha256"] != inner.Manifests[0].Digest {
		t.Errorf("OCI statement subjects %+v, want %s of %s", stmt.Subject, wantName, inner.Manifests[0].Digest)
	}

	out, _ := e.mustRun("inspect", "app:v1")
	var info exporter.ImageInspect
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if info.Attestations == nil || len(info.Attestations.Statements) != 1 || info.Attestations.Statements[0].PredicateType != attest.PredicateSLSA1 {
		t.Fatalf("inspect attestations %+v", info.Attestations)
	}
	out, _ = e.mustRun("inspect", "--attestation", "provenance", "app:v1")
	var stmts []attest.Statement
	if err := json.Unmarshal([]byte(out), &stmts); err != nil || len(stmts) != 1 {
		t.Fatalf("inspect --attestation provenance: %v\n%s", err, out)
	}
	if s := stmts[0]; s.Subject[0].Name != wantName || "sha256:"+s.Subject[0].Digest["sha256"] != info.Digest {
		t.Errorf("stored statement subjects %+v, want %s of the stored image %s", s.Subject, wantName, info.Digest)
	}
	if _, errOut, err := e.run("inspect", "--attestation", "sbom", "app:v1"); err == nil || !strings.Contains(errOut, "has no sbom attestation") {
		t.Errorf("inspect --attestation sbom of an image without one: %v\n%s", err, errOut)
	}
	// prune keeps them while the image is tagged.
	e.mustRun("prune", "--all")
	if out, _ := e.mustRun("inspect", "--attestation", "provenance", "app:v1"); !strings.Contains(out, "slsa.dev/provenance/v1") {
		t.Errorf("attestations lost by prune:\n%s", out)
	}
}

// testGitProvenanceAttestation (SHA-1 and SHA-256 repositories), ported:
// a Git context's provenance names the URL (credentials masked), the
// Dockerfile path, the commit among the materials; nothing local, no
// network: complete and hermetic.
func TestE2EGitProvenanceAttestation(t *testing.T) {
	for _, format := range []string{"sha1", "sha256"} {
		t.Run(format, func(t *testing.T) {
			e := newEnv(t)
			reg := startRegistry(t)
			e.mustRun("tag", "busybox:fixture", "busybox:latest")
			dockerfile := "\nFROM busybox:latest\nRUN --network=none echo \"git\" > /foo\nCOPY myapp.Dockerfile /\n"
			init := "git -c init.defaultBranch=master init -q"
			if format == "sha256" {
				init += " --object-format=sha256"
			}
			repo := t.TempDir()
			for _, c := range []string{init, "mkdir src", "cat > src/myapp.Dockerfile", "git add src/myapp.Dockerfile",
				"git -c user.email=test -c user.name=test commit -qm initial", "git branch v1", "git update-server-info"} {
				cmd := exec.Command("sh", "-c", c)
				cmd.Dir, cmd.Stdin = repo, strings.NewReader(dockerfile)
				cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+repo)
				if out, err := cmd.CombinedOutput(); err != nil {
					if format == "sha256" && strings.Contains(string(out), "object-format") {
						t.Skipf("git without SHA-256 repositories: %s", out)
					}
					t.Fatalf("%s: %v\n%s", c, err, out)
				}
			}
			sha, err := exec.Command("git", "-C", repo, "rev-parse", "v1").Output()
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(http.FileServer(http.Dir(repo)))
			t.Cleanup(srv.Close)
			expectedURL := strings.Replace(srv.URL, "http://", "http://xxxxx:xxxxx@", 1)
			url := strings.Replace(srv.URL, "http://", "http://user:pass@", 1)
			target := reg + "/buildkit/testwithprovenance:git"
			e.mustRun("build", "--provenance=true", "-f", "myapp.Dockerfile", "-t", target, "--push", url+"/.git#v1:src")
			a := readAttested(t, target)
			if got := fileOf(t, a.img, "foo"); got != "git\n" {
				t.Errorf("/foo = %q", got)
			}
			validateSLSA1(t, a.statements[0], a.image.Digest)
			pred := predicateOf(t, a.statements[0])
			ext := pred.BuildDefinition.ExternalParameters
			if ext.Request.Frontend == "" || ext.ConfigSource.URI != expectedURL+"/.git#v1:src" || ext.ConfigSource.Path != "myapp.Dockerfile" ||
				pred.BuildDefinition.InternalParameters.DockerfileVersion == "" {
				t.Errorf("configSource %+v frontend %q", ext.ConfigSource, ext.Request.Frontend)
			}
			deps := pred.BuildDefinition.ResolvedDependencies
			wantBase := "pkg:docker/busybox@latest?platform=" + strings.ReplaceAll(attest.PlatformString(hostPlatform()), "/", "%2F")
			if len(deps) != 2 || deps[0].URI != wantBase || deps[0].Digest["sha256"] == "" ||
				deps[1].URI != expectedURL+"/.git#v1" || deps[1].Digest[format] != strings.TrimSpace(string(sha)) {
				t.Errorf("resolvedDependencies %+v", deps)
			}
			m := pred.RunDetails.Metadata
			if len(ext.Request.Locals) != 0 || !m.Completeness.ResolvedDependencies || !m.Hermetic || !m.Completeness.Request || m.Reproducible || len(m.BuildKit.VCS) != 0 {
				t.Errorf("locals %v metadata %+v", ext.Request.Locals, m)
			}
		})
	}
}

// testSecretSSHProvenance, ported: max mode lists the secrets and ssh
// agents RUN mounts (optional unless required).
func TestE2ESecretSSHProvenance(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	dir := e.context("FROM busybox:fixture\nRUN --mount=type=secret,id=mysecret --mount=type=secret,id=othersecret --mount=type=ssh echo \"ok\" > /foo\n", nil)
	target := reg + "/buildkit/testsecretprovenance:latest"
	e.mustRun("build", "--provenance=mode=max", "-t", target, "--push", dir)
	a := readAttested(t, target)
	if got := fileOf(t, a.img, "foo"); got != "ok\n" {
		t.Errorf("/foo = %q", got)
	}
	req := predicateOf(t, a.statements[0]).BuildDefinition.ExternalParameters.Request
	if len(req.Secrets) != 2 || req.Secrets[0].ID != "mysecret" || !req.Secrets[0].Optional || req.Secrets[1].ID != "othersecret" || !req.Secrets[1].Optional {
		t.Errorf("secrets %+v", req.Secrets)
	}
	if len(req.SSH) != 1 || req.SSH[0].ID != "default" || !req.SSH[0].Optional {
		t.Errorf("ssh %+v", req.SSH)
	}
}

// testOCILayoutProvenance, ported: an image of an OCI layout context is
// a pkg:oci material with the layout's manifest digest.
func TestE2EOCILayoutProvenance(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	ocidir := filepath.Join(e.dir, "ocidir")
	e.mustRun("build", "-o", "type=oci,tar=false,dest="+ocidir, e.context("FROM scratch\nCOPY <<EOF /foo\nfoo\nEOF\n", nil))
	idx := ociIndexOf(t, ocidir)
	if len(idx.Manifests) != 1 {
		t.Fatalf("layout index %+v", idx.Manifests)
	}
	digest := idx.Manifests[0].Digest
	target := reg + "/buildkit/clientprovenance:ocilayout"
	e.mustRun("build", "--build-context", "foo=oci-layout://"+ocidir+"@"+digest.String(), "--provenance=mode=max", "-t", target, "--push",
		e.context("FROM foo\nCOPY <<EOF /bar\nbar\nEOF\n", nil))
	a := readAttested(t, target)
	if fileOf(t, a.img, "foo") != "foo\n" || fileOf(t, a.img, "bar") != "bar\n" {
		t.Errorf("image files")
	}
	deps := predicateOf(t, a.statements[0]).BuildDefinition.ResolvedDependencies
	if len(deps) != 1 || !strings.Contains(deps[0].URI, "/foo") || !strings.HasPrefix(deps[0].URI, "pkg:oci/") || deps[0].Digest["sha256"] != digest.Hex {
		t.Errorf("resolvedDependencies %+v, want pkg:oci/foo with %s", deps, digest)
	}
}

// testNilProvenance, ported: a build without layers exports with a
// max-mode provenance to the image store, a directory and a tar.
func TestE2ENilProvenance(t *testing.T) {
	e := newEnv(t)
	dir := e.context("FROM scratch\nENV FOO=bar\n", nil)
	for _, out := range [][]string{{"-t", "nil:v1"}, {"-o", "type=local,dest=" + filepath.Join(e.dir, "nil-local")}, {"-o", "type=tar,dest=" + filepath.Join(e.dir, "nil.tar")}} {
		e.mustRun(append([]string{"build", "--provenance=mode=max"}, append(out, dir)...)...)
	}
}

// testProvenanceExportLocal, ported: a local output holds the statement
// as provenance.json, its subjects the output's files; a tar output too.
func TestE2EProvenanceExportLocal(t *testing.T) {
	e := newEnv(t)
	dir := e.context("FROM busybox:fixture AS base\nCOPY <<EOF /out/foo\nok\nEOF\nFROM scratch\nCOPY --from=base /out /\n", nil)
	dest := filepath.Join(e.dir, "local-out")
	e.mustRun("build", "--provenance=mode=max", "-o", "type=local,dest="+dest, dir)
	wantFileContent(t, filepath.Join(dest, "foo"), "ok\n")
	var stmt struct {
		attest.Statement
		Predicate attest.Predicate `json:"predicate"`
	}
	if err := json.Unmarshal([]byte(readFileString(t, filepath.Join(dest, "provenance.json"))), &stmt); err != nil {
		t.Fatal(err)
	}
	if got := stmt.Predicate.BuildDefinition.InternalParameters.TargetPlatform; got != attest.PlatformString(hostPlatform()) {
		t.Errorf("targetPlatform %q", got)
	}
	sum := sha256.Sum256([]byte("ok\n"))
	if len(stmt.Subject) != 1 || stmt.Subject[0].Name != "foo" || stmt.Subject[0].Digest["sha256"] != hex.EncodeToString(sum[:]) {
		t.Errorf("subjects %+v, want the file foo", stmt.Subject)
	}
	if fi, err := os.Stat(filepath.Join(dest, "provenance.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("provenance.json: %v %v", fi, err)
	}
	tarOut := filepath.Join(e.dir, "prov.tar")
	e.mustRun("build", "--provenance=mode=max", "-o", "type=tar,dest="+tarOut, dir)
	b, err := os.ReadFile(tarOut)
	if err != nil {
		t.Fatal(err)
	}
	if !tarHas(t, b, "foo", "ok\n") || !tarHas(t, b, "provenance.json", "") {
		t.Errorf("tar output lacks foo or provenance.json")
	}
}

// testDuplicateLayersProvenance, ported: a triangle of stages lists the
// base image's layers once per step.
func TestE2EDuplicateLayersProvenance(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	target := reg + "/buildkit/testwithprovenance:dup"
	e.mustRun("build", "--provenance=mode=max", "-t", target, "--push", e.context(
		"FROM busybox:fixture AS base\nFROM base AS a\nRUN date +%s > /a.txt\nFROM base AS b\nCOPY --from=a /a.txt /\nRUN date +%s > /b.txt\n", nil))
	a := readAttested(t, target)
	m := predicateOf(t, a.statement(t, attest.PredicateSLSA1)).RunDetails.Metadata
	if layers := m.BuildKit.Layers["step0:0"]; len(layers) != 1 {
		t.Errorf("step0:0 layers %+v, want one chain", layers)
	}
}

// testCommandSourceMapping, ported: every step has one single-line
// location, step IDs are unique, and every line of the Dockerfile is
// some step's.
func TestE2ECommandSourceMapping(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	dockerfile := "FROM busybox:fixture\nRUN echo \"hello\" > foo\nWORKDIR /tmp\nCOPY foo foo2\nCOPY --link foo foo3\nADD bar bar"
	target := reg + "/buildkit/testsourcemappingprov:latest"
	e.mustRun("build", "--provenance=mode=max", "-t", target, "--push", e.context(dockerfile, map[string]string{"foo": "data", "bar": "data2"}))
	a := readAttested(t, target)
	pred := predicateOf(t, a.statements[0])
	steps := map[string]bool{}
	for _, s := range pred.BuildDefinition.InternalParameters.BuildConfig.Definition {
		steps[s.ID] = true
	}
	if len(steps) != len(pred.BuildDefinition.InternalParameters.BuildConfig.Definition) {
		t.Errorf("step IDs are not unique")
	}
	lines := make([]bool, bytes.Count([]byte(dockerfile), []byte("\n"))+1)
	for id, loc := range pred.RunDetails.Metadata.BuildKit.Source.Locations {
		if !steps[id] {
			t.Errorf("location of unknown step %s", id)
		}
		if len(loc.Locations) != 1 {
			t.Errorf("step %s has %d locations", id, len(loc.Locations))
		}
		for _, l := range loc.Locations {
			for _, r := range l.Ranges {
				if r.Start.Line != r.End.Line || r.Start.Line < 1 || r.Start.Line > len(lines) {
					t.Errorf("step %s range %+v", id, r)
					continue
				}
				lines[r.Start.Line-1] = true
			}
		}
	}
	for i, covered := range lines {
		if !covered {
			t.Errorf("line %d is no step's", i+1)
		}
	}
}
