package attest

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestImagePURL(t *testing.T) {
	amd64 := &v1.Platform{OS: "linux", Architecture: "amd64"}
	for _, tc := range []struct {
		ref   string
		p     *v1.Platform
		local bool
		want  string
	}{
		{"busybox", amd64, false, "pkg:docker/busybox@latest?platform=linux%2Famd64"},
		{"docker.io/library/busybox:1.36", amd64, false, "pkg:docker/busybox@1.36?platform=linux%2Famd64"},
		{"127.0.0.1:5000/ns/app:v1", amd64, false, "pkg:docker/127.0.0.1:5000/ns/app@v1?platform=linux%2Famd64"},
		{"me/app:v1", nil, false, "pkg:docker/me/app@v1"},
		{"busybox@sha256:" + strings.Repeat("a", 64), amd64, false, "pkg:docker/busybox?digest=sha256:" + strings.Repeat("a", 64) + "&platform=linux%2Famd64"},
		{"foo@sha256:" + strings.Repeat("b", 64), amd64, true, "pkg:oci/foo?digest=sha256:" + strings.Repeat("b", 64) + "&platform=linux%2Famd64"},
		{"alpine", &v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, false, "pkg:docker/alpine@latest?platform=linux%2Farm%2Fv7"},
	} {
		got, err := ImagePURL(tc.ref, tc.p, tc.local)
		if err != nil || got != tc.want {
			t.Errorf("ImagePURL(%q) = %q, %v; want %q", tc.ref, got, err, tc.want)
		}
	}
	if _, err := ImagePURL("Not A Ref", nil, false); err == nil {
		t.Error("ImagePURL of an invalid reference: no error")
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pass@example.invalid/repo.git": "https://xxxxx:xxxxx@example.invalid/repo.git",
		"https://user@example.invalid/x":             "https://xxxxx@example.invalid/x",
		"https://example.invalid/x":                  "https://example.invalid/x",
		"git@github.com:org/repo.git":                "git@github.com:org/repo.git",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	minDefault := &ProvenanceOptions{Mode: "min", Version: "v1", InlineOnly: true}
	for _, tc := range []struct {
		name    string
		f       Flags
		want    Config
		wantErr string
	}{
		{name: "default is buildx's", want: Config{Provenance: minDefault}},
		{name: "no default", f: Flags{NoDefault: "1"}, want: Config{}},
		{name: "provenance=true is BuildKit's default mode", f: Flags{Provenance: "true"}, want: Config{Provenance: &ProvenanceOptions{Mode: "max", Version: "v1"}}},
		{name: "provenance=false", f: Flags{Provenance: "false"}, want: Config{}},
		{name: "provenance mode", f: Flags{Provenance: "mode=min,version=v0.2"}, want: Config{Provenance: &ProvenanceOptions{Mode: "min", Version: "v0.2"}}},
		{name: "attest", f: Flags{Attest: []string{"type=provenance,mode=full,builder-id=https://ci/run/1,reproducible=true"}},
			want: Config{Provenance: &ProvenanceOptions{Mode: "max", Version: "v1", BuilderID: "https://ci/run/1", Reproducible: true}}},
		{name: "shorthand wins", f: Flags{Attest: []string{"type=provenance,mode=max"}, Provenance: "false"}, want: Config{}},
		{name: "later attest wins", f: Flags{Attest: []string{"type=provenance,disabled=true", "type=provenance,mode=min"}},
			want: Config{Provenance: &ProvenanceOptions{Mode: "min", Version: "v1"}}},
		{name: "sbom", f: Flags{SBOM: "true"}, want: Config{Provenance: minDefault, SBOM: &SBOMOptions{Generator: DefaultGenerator}}},
		{name: "sbom attest", f: Flags{Attest: []string{"type=sbom"}, Provenance: "false"}, want: Config{SBOM: &SBOMOptions{Generator: DefaultGenerator}}},
		{name: "build arg", f: Flags{BuildArgs: map[string]string{"BUILDKIT_ATTEST_PROVENANCE": "mode=max"}}, want: Config{Provenance: &ProvenanceOptions{Mode: "max", Version: "v1"}}},
		{name: "bad mode", f: Flags{Provenance: "mode=medium"}, wantErr: `invalid mode "medium"`},
		{name: "bad version", f: Flags{Provenance: "version=v3"}, wantErr: "invalid provenance SLSA version: v3"},
		{name: "bad type", f: Flags{Attest: []string{"type=vex"}}, wantErr: `unknown attestation type "vex"`},
		{name: "no type", f: Flags{Attest: []string{"mode=max"}}, wantErr: "attestation type not specified"},
		{name: "other generator", f: Flags{SBOM: "generator=me/scanner"}, wantErr: "other generator images are not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.f)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Parse = %+v %+v, %v; want %+v %+v", got.Provenance, got.SBOM, err, tc.want.Provenance, tc.want.SBOM)
			}
		})
	}
}

func testCapture() *Capture {
	amd64 := &v1.Platform{OS: "linux", Architecture: "amd64"}
	return &Capture{
		Args: map[string]string{
			"build-arg:FOO": "bar", "label:lbl": "abc", "filename": "Dockerfile", "platform": "linux/amd64",
			"context:foo": "https://foo:bar@example.invalid/foo.html", "vcs:source": "https://user:pass@example.invalid/repo.git",
			"vcs:revision": "123456", "attest:provenance": "mode=max",
		},
		Locals: []string{"dockerfile", "context"},
		Images: []ImageSource{
			{Ref: "docker.io/library/busybox:latest", Platform: amd64, Digest: "sha256:" + strings.Repeat("1", 64)},
			{Ref: "docker.io/library/busybox:latest@sha256:" + strings.Repeat("1", 64), Platform: amd64, Digest: "sha256:" + strings.Repeat("1", 64)},
			{Ref: "docker.io/library/alpine:3", Platform: amd64, Digest: "sha256:" + strings.Repeat("2", 64)},
		},
		Git:             []GitSource{{URL: "https://u:p@example.invalid/r.git#v1", Commit: strings.Repeat("c", 40)}},
		HTTP:            []HTTPSource{{URL: "https://example.invalid/f", Digest: "sha256:" + strings.Repeat("3", 64)}, {URL: "https://example.invalid/f", Digest: "sha256:" + strings.Repeat("3", 64)}},
		Secrets:         []Secret{{ID: "z", Optional: true}, {ID: "a"}},
		SSH:             []SSH{{ID: "default", Optional: true}},
		NetworkAccess:   true,
		BuilderPlatform: "linux/amd64", TargetPlatform: "linux/amd64", DockerfileVersion: "1.28.0", Builder: "v1.2.3",
		InvocationID: "abc", Started: time.Unix(100, 0), Finished: time.Unix(200, 0),
		Dockerfile: []byte("FROM busybox\nRUN true\n"), DockerfileName: "Dockerfile",
		Steps: []Step{
			{ID: "step0", Lines: [][2]int{{1, 1}}, Layers: []v1.Descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar", Size: 1, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("4", 64)}}}},
			{ID: "step1", Inputs: []string{"step0:0"}, Lines: [][2]int{{2, 2}}},
		},
	}
}

func decodePredicate(t *testing.T, a Attestation) *Predicate {
	t.Helper()
	var p Predicate
	if err := json.Unmarshal(a.Predicate, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// The predicate's fields as BuildKit fills them, for both modes.
func TestProvenanceModes(t *testing.T) {
	for _, mode := range []string{"min", "max"} {
		a, err := Provenance(testCapture(), ProvenanceOptions{Mode: mode, Version: "v1"})
		if err != nil {
			t.Fatal(err)
		}
		p := decodePredicate(t, a)
		if a.PredicateType != PredicateSLSA1 || a.Path != "provenance.json" || p.BuildDefinition.BuildType != BuildType {
			t.Errorf("%s: type %s path %s buildType %s", mode, a.PredicateType, a.Path, p.BuildDefinition.BuildType)
		}
		ext := p.BuildDefinition.ExternalParameters
		if ext.ConfigSource.Path != "Dockerfile" || ext.ConfigSource.URI != "" || ext.Request.Frontend != Frontend {
			t.Errorf("%s: configSource %+v frontend %q", mode, ext.ConfigSource, ext.Request.Frontend)
		}
		wantArgs := map[string]string{"context:foo": "https://xxxxx:xxxxx@example.invalid/foo.html"}
		if mode == "max" {
			wantArgs["build-arg:FOO"], wantArgs["label:lbl"] = "bar", "abc"
		}
		if !reflect.DeepEqual(ext.Request.Args, wantArgs) {
			t.Errorf("%s: args %v, want %v", mode, ext.Request.Args, wantArgs)
		}
		if got := ext.Request.Locals; len(got) != 2 || got[0].Name != "context" || got[1].Name != "dockerfile" {
			t.Errorf("%s: locals %v", mode, got)
		}
		m := p.RunDetails.Metadata
		if m.Completeness.Request != (mode == "max") || m.Completeness.ResolvedDependencies || m.Hermetic || m.Reproducible {
			t.Errorf("%s: completeness %+v hermetic %v", mode, m.Completeness, m.Hermetic)
		}
		if m.BuildKit.VCS["source"] != "https://xxxxx:xxxxx@example.invalid/repo.git" || m.BuildKit.VCS["revision"] != "123456" {
			t.Errorf("%s: vcs %v", mode, m.BuildKit.VCS)
		}
		if m.InvocationID != "abc" || !m.StartedOn.Equal(time.Unix(100, 0)) || !m.FinishedOn.Equal(time.Unix(200, 0)) {
			t.Errorf("%s: metadata %+v", mode, m)
		}
		deps := p.BuildDefinition.ResolvedDependencies
		wantDeps := []string{"pkg:docker/alpine@3?platform=linux%2Famd64", "pkg:docker/busybox@latest?platform=linux%2Famd64",
			"https://xxxxx:xxxxx@example.invalid/r.git#v1", "https://example.invalid/f"}
		if len(deps) != len(wantDeps) {
			t.Fatalf("%s: dependencies %+v", mode, deps)
		}
		for i, d := range deps {
			if d.URI != wantDeps[i] || len(d.Digest) != 1 {
				t.Errorf("%s: dependency %d = %+v, want %s", mode, i, d, wantDeps[i])
			}
		}
		if deps[2].Digest["sha1"] != strings.Repeat("c", 40) {
			t.Errorf("git digest %v", deps[2].Digest)
		}
		internal := p.BuildDefinition.InternalParameters
		if internal.BuilderPlatform != "linux/amd64" || internal.TargetPlatform != "linux/amd64" || internal.DockerfileVersion != "1.28.0" {
			t.Errorf("%s: internal %+v", mode, internal)
		}
		if mode == "min" {
			if internal.BuildConfig != nil || m.BuildKit.Source != nil || m.BuildKit.Layers != nil || ext.Request.Secrets != nil || ext.Request.SSH != nil {
				t.Errorf("min mode holds max details: %s", a.Predicate)
			}
			continue
		}
		if len(ext.Request.Secrets) != 2 || ext.Request.Secrets[0].ID != "a" || ext.Request.Secrets[0].Optional || !ext.Request.Secrets[1].Optional {
			t.Errorf("secrets %+v", ext.Request.Secrets)
		}
		if len(ext.Request.SSH) != 1 || ext.Request.SSH[0].ID != "default" {
			t.Errorf("ssh %+v", ext.Request.SSH)
		}
		if len(internal.BuildConfig.Definition) != 2 || internal.BuildConfig.Definition[1].Inputs[0] != "step0:0" {
			t.Errorf("build config %+v", internal.BuildConfig)
		}
		src := m.BuildKit.Source
		if len(src.Infos) != 1 || string(src.Infos[0].Data) != "FROM busybox\nRUN true\n" || src.Infos[0].Filename != "Dockerfile" {
			t.Errorf("source infos %+v", src.Infos)
		}
		if r := src.Locations["step1"].Locations[0].Ranges[0]; r.Start.Line != 2 || r.End.Line != 2 {
			t.Errorf("step1 location %+v", r)
		}
		if len(m.BuildKit.Layers) != 1 || len(m.BuildKit.Layers["step0:0"]) != 1 {
			t.Errorf("layers %+v", m.BuildKit.Layers)
		}
	}
}

// A Git context: configSource names the URL and commit, nothing local, no
// network: complete and hermetic.
func TestProvenanceGitContext(t *testing.T) {
	c := &Capture{
		Args: map[string]string{"context": "http://user:pass@127.0.0.1:1/.git#v1:src", "filename": "myapp.Dockerfile"},
		Git:  []GitSource{{URL: "http://user:pass@127.0.0.1:1/.git#v1", Commit: strings.Repeat("d", 64)}},
	}
	a, err := Provenance(c, ProvenanceOptions{Mode: "max", Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	p := decodePredicate(t, a)
	cs := p.BuildDefinition.ExternalParameters.ConfigSource
	if cs.URI != "http://xxxxx:xxxxx@127.0.0.1:1/.git#v1:src" || cs.Path != "myapp.Dockerfile" || cs.Digest["sha256"] != strings.Repeat("d", 64) {
		t.Errorf("configSource %+v", cs)
	}
	if _, ok := p.BuildDefinition.ExternalParameters.Request.Args["context"]; ok {
		t.Error("the context URL stayed among the args")
	}
	m := p.RunDetails.Metadata
	if !m.Completeness.ResolvedDependencies || !m.Hermetic || !m.Completeness.Request {
		t.Errorf("metadata %+v", m)
	}
}

// version=v0.2 is BuildKit's conversion of the same predicate.
func TestProvenanceV02(t *testing.T) {
	a, err := Provenance(testCapture(), ProvenanceOptions{Mode: "max", Version: "v0.2", BuilderID: "https://ci.example/run/1"})
	if err != nil {
		t.Fatal(err)
	}
	var p Predicate02
	if err := json.Unmarshal(a.Predicate, &p); err != nil {
		t.Fatal(err)
	}
	if a.PredicateType != PredicateSLSA02 || p.BuildType != BuildType02 || p.Builder.ID != "https://ci.example/run/1" {
		t.Errorf("type %s buildType %s builder %+v", a.PredicateType, p.BuildType, p.Builder)
	}
	if p.Invocation.ConfigSource.EntryPoint != "Dockerfile" || p.Invocation.Environment.Platform != "linux/amd64" || p.Invocation.Parameters.Args["build-arg:FOO"] != "bar" {
		t.Errorf("invocation %+v", p.Invocation)
	}
	if len(p.Materials) != 4 || p.Metadata.BuildInvocationID != "abc" || !p.Metadata.Completeness.Environment || p.Metadata.Completeness.Materials || p.BuildConfig == nil {
		t.Errorf("materials %v metadata %+v", p.Materials, p.Metadata)
	}
	if p.Metadata.BuildKit.Source == nil || p.Metadata.BuildKit.VCS["revision"] != "123456" {
		t.Errorf("buildkit metadata %+v", p.Metadata.BuildKit)
	}
}

func TestBindSubjects(t *testing.T) {
	h := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("e", 64)}
	subjects, err := ImageSubjects([]string{"127.0.0.1:5000/ref:prov", ""}, v1.Platform{OS: "linux", Architecture: "amd64"}, h)
	if err != nil {
		t.Fatal(err)
	}
	s := Bind(Attestation{PredicateType: PredicateSLSA1, Predicate: json.RawMessage(`{}`)}, subjects)
	b, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://slsa.dev/provenance/v1","subject":[{"name":"pkg:docker/127.0.0.1:5000/ref@prov?platform=linux%2Famd64","digest":{"sha256":"` + h.Hex + `"}}],"predicate":{}}`
	if string(b) != want {
		t.Errorf("statement\n%s\nwant\n%s", b, want)
	}
	if b, _ := Bind(Attestation{PredicateType: "x", Predicate: json.RawMessage(`{}`)}, nil).Marshal(); !strings.Contains(string(b), `"subject":[]`) {
		t.Errorf("unnamed image's statement %s, want an empty subject list", b)
	}
}

// BuildKit's additions to an image's SBOM: each file's layer, unless it
// has a comment, and the creator.
func TestSupplementSPDX(t *testing.T) {
	doc := `{"spdxVersion":"SPDX-2.3","name":"sbom","creationInfo":{"created":"2024-01-01T00:00:00Z","creators":["Organization: Anchore, Inc","Tool: syft-v1.57.2"]},` +
		`"files":[{"fileName":"/etc/os-release","SPDXID":"a"},{"fileName":"usr/bin/x","SPDXID":"b"},{"fileName":"/kept","comment":"mine","SPDXID":"c"},{"fileName":"/nowhere","SPDXID":"d"}],"packages":[{"name":"p","versionInfo":"1"}]}`
	layers := map[string]string{"/etc/os-release": "sha256:1", "/usr/bin/x": "sha256:2", "/kept": "sha256:3"}
	out, err := SupplementSPDX([]byte(doc), func(p string) (string, bool) { d, ok := layers[p]; return d, ok }, "builder-v1")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		CreationInfo struct{ Creators []string }
		Files        []struct{ FileName, Comment string }
		Packages     []struct{ Name, VersionInfo string }
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	wantComments := []string{"layerID: sha256:1", "layerID: sha256:2", "mine", ""}
	for i, f := range got.Files {
		if f.Comment != wantComments[i] {
			t.Errorf("file %s comment %q, want %q", f.FileName, f.Comment, wantComments[i])
		}
	}
	if c := got.CreationInfo.Creators; len(c) != 3 || c[2] != "Tool: builder-v1" {
		t.Errorf("creators %v", c)
	}
	if len(got.Packages) != 1 || got.Packages[0].VersionInfo != "1" {
		t.Errorf("packages changed: %+v", got.Packages)
	}
	if _, err := SupplementSPDX([]byte("not json"), nil, ""); err == nil {
		t.Error("a broken document: no error")
	}
}
