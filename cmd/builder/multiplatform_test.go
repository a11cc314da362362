package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/builder-dev/builder/internal/attest"
)

func TestParseOutputPlatformSplit(t *testing.T) {
	yes, no := true, false
	for _, c := range []struct {
		in      string
		split   *bool
		wantErr string
	}{
		{in: "type=local,dest=out", split: nil},
		{in: "type=local,dest=out,platform-split=true", split: &yes},
		{in: "type=local,dest=out,platform-split=false", split: &no},
		{in: "type=tar,dest=out.tar,platform-split=false", split: &no},
		{in: "type=oci,dest=out.tar,platform-split=false", wantErr: "platform-split belongs to type=local and type=tar"},
		{in: "type=local,dest=out,platform-split=maybe", wantErr: "not a boolean"},
	} {
		o, ok := parsedOutput(t, c.in, c.wantErr)
		if !ok {
			continue
		}
		if s := o.split; (s == nil) != (c.split == nil) || (s != nil && *s != *c.split) {
			t.Errorf("%s: split %v, want %v", c.in, s, c.split)
		}
	}
}

// parsedOutput parses the -o value in: ok is false when it failed, as
// wantErr (a substring of the error) says it must.
func parsedOutput(t *testing.T, in, wantErr string) (o output, ok bool) {
	t.Helper()
	got, err := parseOutputs([]string{in})
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: error %v, want %q", in, err, wantErr)
		}
		return output{}, false
	}
	if err != nil || len(got) != 1 {
		t.Fatalf("%s: %+v, %v", in, got, err)
	}
	return got[0], true
}

// BuildKit splits the platforms of a multi-platform build by default, a
// single-platform build's only with platform-split=true.
func TestOutputPlatformSplit(t *testing.T) {
	yes, no := true, false
	for _, c := range []struct {
		split *bool
		multi bool
		want  bool
	}{
		{nil, false, false}, {nil, true, true},
		{&yes, false, true}, {&yes, true, true},
		{&no, false, false}, {&no, true, false},
	} {
		if got := (output{typ: "local", split: c.split}).platformSplit(c.multi); got != c.want {
			t.Errorf("split %v multi %v: %v, want %v", c.split, c.multi, got, c.want)
		}
	}
}

func TestAttestFileName(t *testing.T) {
	for _, c := range []struct{ path, platform, want string }{
		{"provenance.json", "", "provenance.json"},
		{"provenance.json", "linux_amd64", "provenance.linux_amd64.json"},
		{"sbom-build.spdx.json", "linux_arm_v7", "sbom-build.spdx.linux_arm_v7.json"},
		{"noext", "linux_s390x", "noext.linux_s390x"},
	} {
		if got := attestFileName(c.path, c.platform); got != c.want {
			t.Errorf("attestFileName(%q, %q) = %q, want %q", c.path, c.platform, got, c.want)
		}
	}
}

// fileImage is an image of one layer holding files (name → content).
func fileImage(t *testing.T, files map[string]string) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	tw.Close()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testPlatforms is a two-platform build, linux/amd64 then darwin/amd64,
// each with a file of its own, and a provenance for each.
func testPlatforms(t *testing.T, same bool) ([]*platformBuild, []v1.Image, platformAttests) {
	builds := []*platformBuild{
		{platform: v1.Platform{OS: "linux", Architecture: "amd64"}},
		{platform: v1.Platform{OS: "darwin", Architecture: "amd64"}},
	}
	files := []map[string]string{{"forlinux": "data"}, {"fordarwin": "data2"}}
	if same {
		files[1] = map[string]string{"forlinux": "other"}
	}
	imgs := []v1.Image{fileImage(t, files[0]), fileImage(t, files[1])}
	atts := platformAttests{}
	for _, pb := range builds {
		pred, _ := json.Marshal(map[string]string{"targetPlatform": strings.Join([]string{pb.platform.OS, pb.platform.Architecture}, "/")})
		atts[pb.platform.OS+"/"+pb.platform.Architecture] = &attestRun{atts: []attest.Attestation{{PredicateType: attest.PredicateSLSA1, Predicate: pred, Path: "provenance.json"}}}
	}
	return builds, imgs, atts
}

// The tar of a multi-platform build: one directory per platform, in name
// order (BuildKit sorts them), each with the platform's statements, whose
// subjects are the platform's files; platform-split=false names the
// statements for their platform.
func TestWritePlatformsTar(t *testing.T) {
	for _, split := range []bool{true, false} {
		builds, imgs, atts := testPlatforms(t, false)
		epoch := time.Unix(1700000000, 0).UTC()
		r := &exportRun{epoch: &epoch}
		var buf bytes.Buffer
		if err := r.writePlatformsTar(&buf, builds, imgs, atts, split); err != nil {
			t.Fatal(err)
		}
		prov := func(dir string) string {
			if split {
				return dir + "/provenance.json"
			}
			return dir + "/provenance." + dir + ".json"
		}
		want := []string{"darwin_amd64/", "darwin_amd64/fordarwin", prov("darwin_amd64"), "linux_amd64/", "linux_amd64/forlinux", prov("linux_amd64")}
		var got []string
		stmts := map[string]attest.Statement{}
		tr := tar.NewReader(&buf)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, h.Name)
			if strings.Contains(h.Name, "provenance") {
				var s attest.Statement
				if err := json.NewDecoder(tr).Decode(&s); err != nil {
					t.Fatal(err)
				}
				if h.Mode != 0o600 || !h.ModTime.Equal(epoch) {
					t.Errorf("%s: mode %o time %v", h.Name, h.Mode, h.ModTime)
				}
				stmts[h.Name] = s
			}
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("split=%v: entries %v, want %v", split, got, want)
		}
		for name, file := range map[string]string{prov("darwin_amd64"): "fordarwin", prov("linux_amd64"): "forlinux"} {
			if s := stmts[name]; len(s.Subject) != 1 || s.Subject[0].Name != file || s.Subject[0].Digest["sha256"] == "" {
				t.Errorf("split=%v: %s subjects %+v, want %s", split, name, s.Subject, file)
			}
		}
	}
}

// platform-split=false refuses a file two platforms have, naming both, and
// writes nothing.
func TestWriteLocalMergedConflict(t *testing.T) {
	builds, imgs, atts := testPlatforms(t, true)
	dest := t.TempDir()
	err := (&exportRun{}).writeLocalMerged(t.Context(), dest, builds, imgs, atts)
	if err == nil || err.Error() != "cannot overwrite forlinux from linux/amd64 with darwin/amd64 when split option is disabled" {
		t.Fatalf("error %v", err)
	}
	if entries, _ := os.ReadDir(dest); len(entries) != 0 {
		t.Errorf("wrote %v before refusing", entries)
	}
}

// rootfsFiles lists the paths that are not directories and hashes the
// regular files only when asked.
func TestRootfsFiles(t *testing.T) {
	img := fileImage(t, map[string]string{"a/b": "x", "c": "y"})
	paths, subjects, err := rootfsFiles(img, false)
	if err != nil || len(paths) != 2 || subjects != nil {
		t.Fatalf("without hashes: %v %v %v", paths, subjects, err)
	}
	_, subjects, err = rootfsFiles(img, true)
	if err != nil || len(subjects) != 2 {
		t.Fatalf("with hashes: %v %v", subjects, err)
	}
	for _, s := range subjects {
		if s.Name != "a/b" && s.Name != "c" || len(s.Digest["sha256"]) != 64 {
			t.Errorf("subject %+v", s)
		}
	}
}

// A layerless image (BuildKit's nil ref) gets no provenance.
func TestHasLayers(t *testing.T) {
	withEnv, err := mutate.Config(empty.Image, v1.Config{Env: []string{"FOO=bar"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		img  v1.Image
		want bool
	}{
		{"scratch with ENV", withEnv, false},
		{"one layer", fileImage(t, map[string]string{"f": "x"}), true},
	} {
		if got, err := hasLayers(c.img); err != nil || got != c.want {
			t.Errorf("%s: %v %v, want %v", c.name, got, err, c.want)
		}
	}
}

// TestOutputArchiveNames: an oci or docker output names its image by its
// name= (a CSV field in quotes may list several, as buildx parses -o),
// else by the build's tags; other outputs always take the tags.
func TestOutputArchiveNames(t *testing.T) {
	tags := []string{"app:v1"}
	for _, c := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "type=oci,dest=o.tar", want: tags},
		{in: "type=oci,dest=o.tar,name=reg.io/x:1", want: []string{"reg.io/x:1"}},
		{in: `type=docker,dest=o.tar,"name=a:1,b:2"`, want: []string{"a:1", "b:2"}},
		{in: "type=image,name=c:3", want: tags},
		{in: "type=oci,dest=o.tar,name=UPPER:x", wantErr: "invalid tag"},
		{in: `type=oci,"dest=o.tar`, wantErr: "parse"},
	} {
		o, ok := parsedOutput(t, c.in, c.wantErr)
		if !ok {
			continue
		}
		if diff := cmp.Diff(c.want, o.archiveNames(tags)); diff != "" {
			t.Errorf("%s: names (-want +got):\n%s", c.in, diff)
		}
	}
}
