package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/attest"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// attested is an image index as BuildKit pushes an attested image: the
// image, its attestation manifest and the statements in it.
type attested struct {
	index      v1.Hash
	image      v1.Descriptor
	attestDesc v1.Descriptor
	manifest   *v1.Manifest // the attestation manifest
	statements [][]byte
	img        v1.Image
}

// readAttested reads ref's index from the registry and checks the layout
// BuildKit gives it: the image manifest with its platform, then the
// attestation manifest (platform unknown/unknown, annotated with the
// image's digest), an OCI artifact whose layers are in-toto statements
// annotated with their predicate types, the image as subject.
func readAttested(t *testing.T, ref string) *attested {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	if desc.MediaType != types.OCIImageIndex {
		t.Fatalf("%s is a %s, want an OCI image index", ref, desc.MediaType)
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 2 {
		t.Fatalf("index of %s has %d manifests, want 2 (image, attestation manifest)", ref, len(m.Manifests))
	}
	a := &attested{index: desc.Digest, image: m.Manifests[0], attestDesc: m.Manifests[1]}
	if p := a.image.Platform; p == nil || p.OS != "linux" || p.Architecture != hostPlatform().Architecture {
		t.Errorf("image entry platform %+v", p)
	}
	if p := a.attestDesc.Platform; p == nil || p.OS != "unknown" || p.Architecture != "unknown" {
		t.Errorf("attestation entry platform %+v, want unknown/unknown", p)
	}
	if a.attestDesc.Annotations["vnd.docker.reference.type"] != "attestation-manifest" || a.attestDesc.Annotations["vnd.docker.reference.digest"] != a.image.Digest.String() {
		t.Errorf("attestation entry annotations %v, want attestation-manifest of %s", a.attestDesc.Annotations, a.image.Digest)
	}
	if a.img, err = idx.Image(a.image.Digest); err != nil {
		t.Fatal(err)
	}
	att, err := idx.Image(a.attestDesc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if a.manifest, err = att.Manifest(); err != nil {
		t.Fatal(err)
	}
	am := a.manifest
	if am.ArtifactType != "application/vnd.docker.attestation.manifest.v1+json" || am.Config.MediaType != "application/vnd.oci.empty.v1+json" {
		t.Errorf("attestation manifest artifactType %q config %+v", am.ArtifactType, am.Config)
	}
	if am.Subject == nil || am.Subject.Digest != a.image.Digest {
		t.Errorf("attestation subject %+v, want %s", am.Subject, a.image.Digest)
	}
	layers, err := att.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		if d := am.Layers[i]; d.MediaType != "application/vnd.in-toto+json" || d.Annotations["in-toto.io/predicate-type"] == "" {
			t.Errorf("statement layer %d: %+v", i, d)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		a.statements = append(a.statements, b)
	}
	return a
}

// statement returns the attestation of a predicate type, failing the
// test without one.
func (a *attested) statement(t *testing.T, typ string) []byte {
	t.Helper()
	for i, l := range a.manifest.Layers {
		if l.Annotations["in-toto.io/predicate-type"] == typ {
			return a.statements[i]
		}
	}
	t.Fatalf("no %s statement among %d", typ, len(a.statements))
	return nil
}

var (
	hexDigest = regexp.MustCompile(`^[0-9a-f]{64}$`)
	typeURI   = regexp.MustCompile(`^[a-z][a-z0-9+.-]*:`)
)

// validateSLSA1 checks a statement field by field against the in-toto
// Statement v1 and SLSA Provenance v1 schemas: required fields present
// with their types, digests as algorithm → hex, URIs, RFC 3339 times.
func validateSLSA1(t *testing.T, raw []byte, subjectDigest v1.Hash) {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("statement is not JSON: %v", err)
	}
	if s["_type"] != "https://in-toto.io/Statement/v1" {
		t.Errorf("_type %v", s["_type"])
	}
	if s["predicateType"] != "https://slsa.dev/provenance/v1" {
		t.Errorf("predicateType %v", s["predicateType"])
	}
	subjects, ok := s["subject"].([]any)
	if !ok || len(subjects) == 0 {
		t.Fatalf("subject %v: want a non-empty list", s["subject"])
	}
	for _, sub := range subjects {
		sm, _ := sub.(map[string]any)
		n, _ := sm["name"].(string)
		d, _ := sm["digest"].(map[string]any)
		if n == "" || len(d) == 0 {
			t.Errorf("subject %v: want a name and a digest set", sub)
		}
		if d["sha256"] != subjectDigest.Hex {
			t.Errorf("subject digest %v, want the image manifest %s", d, subjectDigest)
		}
	}
	pred := object(t, s, "predicate")
	bd := object(t, pred, "buildDefinition")
	if bt, _ := bd["buildType"].(string); !typeURI.MatchString(bt) {
		t.Errorf("buildDefinition.buildType %q is not a type URI", bt)
	}
	object(t, bd, "externalParameters") // REQUIRED, an object
	if ip, ok := bd["internalParameters"]; ok {
		if _, isObj := ip.(map[string]any); !isObj {
			t.Errorf("internalParameters %v: want an object", ip)
		}
	}
	deps, _ := bd["resolvedDependencies"].([]any)
	for _, dep := range deps {
		validateResourceDescriptor(t, dep)
	}
	rd := object(t, pred, "runDetails")
	builder := object(t, rd, "builder")
	if _, ok := builder["id"].(string); !ok {
		t.Errorf("runDetails.builder.id %v: want a string", builder["id"])
	}
	if v, ok := builder["version"]; ok {
		vm, isMap := v.(map[string]any)
		for _, x := range vm {
			if _, isStr := x.(string); !isStr {
				isMap = false
			}
		}
		if !isMap {
			t.Errorf("runDetails.builder.version %v: want a map of strings", v)
		}
	}
	md := object(t, rd, "metadata")
	if id, _ := md["invocationId"].(string); id == "" {
		t.Errorf("runDetails.metadata.invocationId %v", md["invocationId"])
	}
	for _, k := range []string{"startedOn", "finishedOn"} {
		v, _ := md[k].(string)
		if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
			t.Errorf("runDetails.metadata.%s %q: not an RFC 3339 timestamp", k, v)
		}
	}
}

func validateResourceDescriptor(t *testing.T, dep any) {
	t.Helper()
	m, ok := dep.(map[string]any)
	if !ok {
		t.Errorf("resolvedDependency %v: want an object", dep)
		return
	}
	uri, _ := m["uri"].(string)
	d, _ := m["digest"].(map[string]any)
	if uri == "" && len(d) == 0 {
		t.Errorf("resolvedDependency %v: needs a uri or a digest", dep)
	}
	if uri != "" && !typeURI.MatchString(uri) {
		t.Errorf("resolvedDependency uri %q is not a URI", uri)
	}
	for alg, v := range d {
		hex, _ := v.(string)
		if alg == "" || hex == "" || strings.Trim(hex, "0123456789abcdef") != "" {
			t.Errorf("resolvedDependency digest %s: %v", alg, v)
		}
	}
}

func object(t *testing.T, m map[string]any, k string) map[string]any {
	t.Helper()
	o, ok := m[k].(map[string]any)
	if !ok {
		t.Fatalf("%s: %v, want an object", k, m[k])
	}
	return o
}

// predicateOf decodes a statement's SLSA v1 predicate.
func predicateOf(t *testing.T, raw []byte) *attest.Predicate {
	t.Helper()
	var s struct{ Predicate attest.Predicate }
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return &s.Predicate
}

// contextRepo makes the context a Git repository whose origin carries
// credentials, as buildx's vcs:source reads it.
func contextRepo(t *testing.T, dir string) string {
	t.Helper()
	for _, c := range []string{
		"git -c init.defaultBranch=master init -q",
		"git remote add origin https://user:pass@example.invalid/repo.git",
		"git add -A && git -c user.name=t -c user.email=t@x commit -qm init",
	} {
		cmd := exec.Command("sh", "-c", c)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", c, err, out)
		}
	}
	out, err := exec.Command("git", "-C", dir, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// testProvenanceAttestation, ported (the Dockerfile frontend's case): a
// pushed image with provenance in each mode and SLSA version: the index
// layout, the statement against the schema, and BuildKit's assertions on
// the predicate. Here the base image comes from the registry, so the
// material's digest is the registry's; vcs:source/vcs:revision come from
// the context's Git repository as buildx reads them, and context:foo is
// a local server's URL with credentials (builder fetches named contexts).
func TestE2EProvenanceAttestation(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	base := reg + "/buildkit/busybox:latest"
	e.mustRun("push", "busybox:fixture", base)
	baseDigest := remoteDigest(t, base)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "foo\n") }))
	t.Cleanup(srv.Close)
	fooURL := strings.Replace(srv.URL, "http://", "http://foo:bar@", 1)
	dockerfile := "FROM " + base + "\nRUN echo \"ok\" > /foo\n"
	dir := e.context(dockerfile, nil)
	revision := contextRepo(t, dir)

	for _, version := range []string{"", "v1", "v0.2"} {
		for _, mode := range []string{"", "min", "max"} {
			var opts []string
			if version != "" {
				opts = append(opts, "version="+version)
			}
			if mode != "" {
				opts = append(opts, "mode="+mode)
			}
			t.Run(strings.Join(append([]string{"v" + version}, mode), "-"), func(t *testing.T) {
				target := fmt.Sprintf("%s/buildkit/testwithprovenance:v%s-%s", reg, strings.ReplaceAll(version, ".", ""), mode)
				prov := "true"
				if len(opts) > 0 {
					prov = strings.Join(opts, ",")
				}
				start := time.Now()
				mustRunIn(t, e, "build", "--provenance="+prov, "--build-arg", "FOO=bar", "--label", "lbl=abc",
					"--build-context", "foo="+fooURL, "-t", target, "--push", dir)
				a := readAttested(t, target)
				if got := fileOf(t, a.img, "foo"); got != "ok\n" {
					t.Errorf("/foo = %q", got)
				}
				raw := a.statements[0]
				var hdr attest.Statement
				if err := json.Unmarshal(raw, &hdr); err != nil {
					t.Fatal(err)
				}
				if hdr.Type != "https://in-toto.io/Statement/v1" {
					t.Errorf("_type %q", hdr.Type)
				}
				if version == "v0.2" {
					checkProvenance02(t, raw, mode, baseDigest, revision)
					return
				}
				if hdr.PredicateType != "https://slsa.dev/provenance/v1" {
					t.Errorf("predicateType %q", hdr.PredicateType)
				}
				validateSLSA1(t, raw, a.image.Digest)
				pred := predicateOf(t, raw)
				if pred.BuildDefinition.BuildType != "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md" || pred.RunDetails.Builder.ID != "" {
					t.Errorf("buildType %q builder.id %q", pred.BuildDefinition.BuildType, pred.RunDetails.Builder.ID)
				}
				ext := pred.BuildDefinition.ExternalParameters
				if ext.ConfigSource.URI != "" || ext.ConfigSource.Path != "Dockerfile" || ext.Request.Frontend != "dockerfile.v0" {
					t.Errorf("configSource %+v frontend %q", ext.ConfigSource, ext.Request.Frontend)
				}
				args := ext.Request.Args
				if mode == "max" || mode == "" {
					if len(args) != 3 || args["build-arg:FOO"] != "bar" || args["label:lbl"] != "abc" || !pred.RunDetails.Metadata.Completeness.Request {
						t.Errorf("max args %v completeness %+v", args, pred.RunDetails.Metadata.Completeness)
					}
				} else if len(args) != 1 || pred.RunDetails.Metadata.Completeness.Request {
					t.Errorf("min args %v completeness %+v", args, pred.RunDetails.Metadata.Completeness)
				}
				if want := strings.Replace(srv.URL, "http://", "http://xxxxx:xxxxx@", 1); args["context:foo"] != want {
					t.Errorf("context:foo = %q, want %q", args["context:foo"], want)
				}
				deps := pred.BuildDefinition.ResolvedDependencies
				wantBase := fmt.Sprintf("pkg:docker/%s/buildkit/busybox@latest?platform=%s", reg, strings.ReplaceAll(attest.PlatformString(hostPlatform()), "/", "%2F"))
				if len(deps) != 1 || deps[0].URI != wantBase || deps[0].Digest["sha256"] != baseDigest.Hex {
					t.Errorf("resolvedDependencies %+v, want %s with the registry's digest %s", deps, wantBase, baseDigest)
				}
				vcs := pred.RunDetails.Metadata.BuildKit.VCS
				if vcs["source"] != "https://xxxxx:xxxxx@example.invalid/repo.git" || vcs["revision"] != revision {
					t.Errorf("vcs %v, want the redacted origin and %s", vcs, revision)
				}
				m := pred.RunDetails.Metadata
				if m.InvocationID == "" || m.StartedOn == nil || m.FinishedOn == nil || !m.StartedOn.Before(*m.FinishedOn) ||
					m.StartedOn.Before(start.Add(-time.Second)) || time.Since(*m.FinishedOn) > 5*time.Minute {
					t.Errorf("metadata times %+v", m)
				}
				if l := ext.Request.Locals; len(l) != 2 || l[0].Name != "context" || l[1].Name != "dockerfile" {
					t.Errorf("locals %+v", l)
				}
				ip := pred.BuildDefinition.InternalParameters
				if ip.BuilderPlatform != attest.PlatformString(hostPlatform()) || ip.TargetPlatform != attest.PlatformString(hostPlatform()) || ip.DockerfileVersion == "" {
					t.Errorf("internal parameters %+v", ip)
				}
				if m.Completeness.ResolvedDependencies || m.Reproducible || m.Hermetic {
					t.Errorf("completeness %+v reproducible %v hermetic %v", m.Completeness, m.Reproducible, m.Hermetic)
				}
				if mode == "max" || mode == "" {
					src := m.BuildKit.Source
					if len(m.BuildKit.Layers) != 2 || src == nil || src.Infos[0].Filename != "Dockerfile" || string(src.Infos[0].Data) != dockerfile || ip.BuildConfig == nil {
						t.Errorf("max details: layers %v source %+v config %+v", m.BuildKit.Layers, src, ip.BuildConfig)
					}
				} else if len(m.BuildKit.Layers) != 0 || m.BuildKit.Source != nil || ip.BuildConfig != nil {
					t.Errorf("min mode holds max details")
				}
			})
		}
	}
}

// checkProvenance02 is the SLSA v0.2 half of testProvenanceAttestation.
func checkProvenance02(t *testing.T, raw []byte, mode string, baseDigest v1.Hash, revision string) {
	t.Helper()
	var s struct {
		PredicateType string
		Predicate     attest.Predicate02
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	p := s.Predicate
	if s.PredicateType != "https://slsa.dev/provenance/v0.2" || p.BuildType != "https://mobyproject.org/buildkit@v1" || p.Builder.ID != "" {
		t.Errorf("predicateType %q buildType %q builder %+v", s.PredicateType, p.BuildType, p.Builder)
	}
	if p.Invocation.ConfigSource.URI != "" || p.Invocation.ConfigSource.EntryPoint != "Dockerfile" || p.Invocation.Parameters.Frontend != "dockerfile.v0" {
		t.Errorf("invocation %+v", p.Invocation)
	}
	args := p.Invocation.Parameters.Args
	if mode == "max" || mode == "" {
		if len(args) != 3 || args["build-arg:FOO"] != "bar" || !p.Metadata.Completeness.Parameters {
			t.Errorf("max args %v completeness %+v", args, p.Metadata.Completeness)
		}
		if len(p.Metadata.BuildKit.Layers) != 2 || p.Metadata.BuildKit.Source == nil || p.BuildConfig == nil {
			t.Errorf("max details missing")
		}
	} else if len(args) != 1 || p.Metadata.Completeness.Parameters || p.BuildConfig != nil || p.Metadata.BuildKit.Source != nil {
		t.Errorf("min args %v completeness %+v", args, p.Metadata.Completeness)
	}
	if p.Invocation.Environment.DockerfileVersion == "" || p.Invocation.Environment.Platform != attest.PlatformString(hostPlatform()) {
		t.Errorf("environment %+v", p.Invocation.Environment)
	}
	if len(p.Materials) != 1 || p.Materials[0].Digest["sha256"] != baseDigest.Hex || !strings.HasPrefix(p.Materials[0].URI, "pkg:docker/") {
		t.Errorf("materials %+v", p.Materials)
	}
	if p.Metadata.BuildKit.VCS["revision"] != revision || p.Metadata.BuildInvocationID == "" || !p.Metadata.Completeness.Environment ||
		p.Metadata.Completeness.Materials || p.Metadata.Reproducible || p.Metadata.Hermetic {
		t.Errorf("metadata %+v", p.Metadata)
	}
	if p.Metadata.BuildStartedOn == nil || p.Metadata.BuildFinishedOn == nil || !p.Metadata.BuildStartedOn.Before(*p.Metadata.BuildFinishedOn) {
		t.Errorf("times %+v", p.Metadata)
	}
}

func remoteDigest(t *testing.T, ref string) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(r)
	if err != nil {
		t.Fatal(err)
	}
	return d.Digest
}

// fileOf reads a file of an image's filesystem.
func fileOf(t *testing.T, img v1.Image, path string) string {
	t.Helper()
	dir := t.TempDir()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("tar", "-x", "-C", dir)
		cmd.Stdin = rc
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("untar: %v\n%s", err, out)
		}
		rc.Close()
	}
	b, err := os.ReadFile(filepath.Join(dir, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mustRunIn is e.mustRun failing t (a subtest) rather than e's test.
func mustRunIn(t *testing.T, e *e2eEnv, args ...string) (string, string) {
	t.Helper()
	out, errOut, err := e.run(args...)
	if err != nil {
		t.Fatalf("builder %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out, errOut
}

// TestE2EPushStoredAttestations: `builder push` of an image the store
// keeps with attestations (a build with --provenance and -t, no --push)
// pushes them too: an index of the image and its attestation manifest,
// each statement's subject the pushed manifest (not the stored one) under
// the pushed name, its predicate as stored.
func TestE2EPushStoredAttestations(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	dir := e.context("FROM busybox:fixture\nRUN echo ok > /foo\n", nil)
	e.mustRun("build", "--provenance=mode=max", "-t", "attested:v1", dir)
	stored, _ := e.mustRun("inspect", "--attestation", "provenance", "attested:v1")
	dst := reg + "/stored/attested:v1"
	e.mustRun("push", "attested:v1", dst)
	a := readAttested(t, dst)
	raw := a.statement(t, "https://slsa.dev/provenance/v1")
	var got attest.Statement
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	var storedAll []attest.Statement
	if err := json.Unmarshal([]byte(stored), &storedAll); err != nil || len(storedAll) != 1 {
		t.Fatalf("inspect --attestation provenance: %v, %d statements\n%s", err, len(storedAll), stored)
	}
	want := storedAll[0]
	if len(want.Subject) != 1 || want.Subject[0].Digest["sha256"] == a.image.Digest.Hex {
		t.Fatalf("stored statement subjects %+v: the test needs the stored manifest to differ from the pushed one", want.Subject)
	}
	wantName := fmt.Sprintf("pkg:docker/%s/stored/attested@v1?platform=%s", reg, strings.ReplaceAll(attest.PlatformString(hostPlatform()), "/", "%2F"))
	if len(got.Subject) != 1 || got.Subject[0].Name != wantName || got.Subject[0].Digest["sha256"] != a.image.Digest.Hex {
		t.Errorf("pushed statement subjects %+v, want %s with the pushed manifest %s", got.Subject, wantName, a.image.Digest)
	}
	var gotPred, wantPred bytes.Buffer
	if err := json.Compact(&gotPred, got.Predicate); err != nil {
		t.Fatal(err)
	}
	if err := json.Compact(&wantPred, want.Predicate); err != nil {
		t.Fatal(err)
	}
	if gotPred.String() != wantPred.String() {
		t.Errorf("pushed predicate differs from the stored one:\n%s\n%s", gotPred.String(), wantPred.String())
	}
	validateSLSA1(t, raw, a.image.Digest)
}

// TestE2EProvenanceNamedRemoteContexts: a Git and an HTTP named context
// that steps read are materials of the provenance, as BuildKit lists its
// git and http sources: the repository with the commit it resolved to,
// the download with its content's digest. A named context no step reads
// is not one.
func TestE2EProvenanceNamedRemoteContexts(t *testing.T) {
	e := newEnv(t)
	const body = "downloaded\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
	t.Cleanup(srv.Close)
	repo := t.TempDir()
	if err := os.WriteFile(filepath.Join(repo, "f"), []byte("from git\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	commit := contextRepo(t, repo)
	dir := e.context("FROM busybox:fixture\nCOPY --from=web context /web\nCOPY --from=src f /src\n", nil)
	out := filepath.Join(e.dir, "out")
	mustRunIn(t, e, "build", "--provenance=mode=max", "--build-context", "web="+srv.URL+"/file",
		"--build-context", "src=file://"+repo, "--build-context", "unused="+srv.URL+"/other", "-o", "type=local,dest="+out, dir)
	if got := readOut(t, out, "src"); got != "from git\n" {
		t.Fatalf("/src = %q", got)
	}
	raw, err := os.ReadFile(filepath.Join(out, "provenance.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(body))
	want := map[string]string{srv.URL + "/file": hex.EncodeToString(sum[:]), "file://" + repo: commit}
	for _, dep := range predicateOf(t, raw).BuildDefinition.ResolvedDependencies {
		if strings.HasPrefix(dep.URI, "pkg:docker/") {
			continue
		}
		d, ok := want[dep.URI]
		if !ok || (dep.Digest["sha256"] != d && dep.Digest["sha1"] != d) {
			t.Errorf("material %s %v, want one of %v", dep.URI, dep.Digest, want)
		}
		delete(want, dep.URI)
	}
	if len(want) > 0 {
		t.Errorf("materials lack %v", want)
	}
}
