package exporter

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// member is one entry of a hand-made archive.
type member struct {
	name, body, link string
	typ              byte
}

func writeArchive(t *testing.T, members []member) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		typ := m.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: m.name, Typeflag: typ, Linkname: m.link, Mode: 0o644, Size: int64(len(m.body)), ModTime: time.Unix(0, 0)}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(m.body)); err != nil && typ == tar.TypeReg {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "in.tar")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func sha(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

// legacyArchive is a pre-25 docker save: <id>.json config, <id>/layer.tar.
func legacyArchive(t *testing.T, layer []byte, diffID string, compress bool) []member {
	cfg := fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{"Cmd":["/hello"]},"rootfs":{"type":"layers","diff_ids":[%q]}}`, diffID)
	body := layer
	if compress {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(layer)
		zw.Close()
		body = gz.Bytes()
	}
	cfgName := strings.TrimPrefix(sha([]byte(cfg)), "sha256:") + ".json"
	manifest := fmt.Sprintf(`[{"Config":%q,"RepoTags":["busybox:latest"],"Layers":["abc/layer.tar"]}]`, cfgName)
	return []member{
		{name: "abc/", typ: tar.TypeDir},
		{name: "abc/VERSION", body: "1.0"},
		{name: "abc/layer.tar", body: string(body)},
		{name: cfgName, body: cfg},
		{name: "manifest.json", body: manifest},
		{name: "repositories", body: `{"busybox":{"latest":"abc"}}`},
	}
}

func TestReadLegacyDocker(t *testing.T) {
	layer := layerTar(t, map[string]string{"hello": "world"})
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", compress), func(t *testing.T) {
			path := writeArchive(t, legacyArchive(t, layer, sha(layer), compress))
			got, err := ReadArchive(t.Context(), path)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || len(got[0].Tags) != 1 || got[0].Tags[0] != "busybox:latest" {
				t.Fatalf("got %+v", got)
			}
			checkImage(t, got[0].Image)
			cfg, err := got[0].Image.ConfigFile()
			if err != nil || cfg.Config.Cmd[0] != "/hello" {
				t.Errorf("config %+v, %v", cfg, err)
			}
		})
	}
}

func TestReadHostile(t *testing.T) {
	layer := layerTar(t, map[string]string{"hello": "world"})
	other := layerTar(t, map[string]string{"other": "x"})
	legacy := legacyArchive(t, layer, sha(layer), false)
	replace := func(ms []member, name string, m member) []member {
		out := append([]member(nil), ms...)
		for i := range out {
			if out[i].name == name {
				out[i] = m
			}
		}
		return out
	}
	cases := []struct {
		name    string
		members []member
		want    string
	}{
		{"symlink cycle", append(replace(legacy, "manifest.json", member{name: "manifest.json", typ: tar.TypeSymlink, link: "config.json"}),
			member{name: "config.json", typ: tar.TypeSymlink, link: "manifest.json"}), "symlink cycle"},
		{"symlink escapes", replace(legacy, "manifest.json", member{name: "manifest.json", typ: tar.TypeSymlink, link: "../../etc/passwd"}), "escapes the archive"},
		{"entry escapes", append(legacy, member{name: "../evil", body: "x"}), "escapes the archive"},
		{"layer path escapes", replace(legacy, "manifest.json", member{name: "manifest.json", body: `[{"Config":"x.json","Layers":["../../etc/passwd"]}]`}), ""},
		{"layer not diff_id", legacyArchive(t, other, sha(layer), false), "does not match diff_id"},
		{"more diff_ids than layers", replace(legacy, "manifest.json", member{name: "manifest.json", body: `[{"Config":"` + legacy[3].name + `","Layers":[]}]`}), "lists 1 diff_ids but the manifest has 0 layers"},
		{"missing layer", replace(legacy, "abc/layer.tar", member{name: "abc/other.tar", body: "x"}), "abc/layer.tar: not found"},
		{"bad json", replace(legacy, "manifest.json", member{name: "manifest.json", body: "{"}), "decode manifest.json"},
		{"not an image", []member{{name: "hello", body: "x"}}, "not an image archive"},
		{"bad tag", replace(legacy, "manifest.json", member{name: "manifest.json", body: `[{"Config":"` + legacy[3].name + `","RepoTags":["UPPER:case"],"Layers":["abc/layer.tar"]}]`}), "parse image name"},
		{"blob digest mismatch", layoutMismatch(t), "verify blobs/sha256/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadArchive(t.Context(), writeArchive(t, tc.members))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "in.tar") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to name the archive and contain %q", err, tc.want)
			}
		})
	}
}

// layoutMismatch is an OCI layout whose nested index is stored under a
// digest its content does not have.
func layoutMismatch(t *testing.T) []member {
	inner := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`
	innerDigest := sha([]byte(inner))
	outer := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":%q,"size":%d}]}`, innerDigest, len(inner))
	return []member{
		{name: "oci-layout", body: `{"imageLayoutVersion":"1.0.0"}`},
		{name: "index.json", body: outer},
		{name: "blobs/sha256/" + strings.TrimPrefix(innerDigest, "sha256:"), body: strings.Replace(inner, "[]", "[ ]", 1)},
	}
}

func TestLayoutIndexCycle(t *testing.T) {
	d := v1.Descriptor{MediaType: "application/vnd.oci.image.index.v1+json", Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}}
	_, err := layoutImage(t.Context(), &tarIndex{}, d, map[v1.Hash]bool{d.Digest: true})
	if err == nil || !strings.Contains(err.Error(), "index cycle") {
		t.Fatalf("err = %v, want an index cycle error", err)
	}
}

func TestReadTruncated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.tar")
	if err := WriteDocker(t.Context(), path, twoImages(t)); err != nil {
		t.Fatal(err)
	}
	data := mustRead(t, path)
	for _, n := range []int{len(data) / 3, len(data) - 1500, 100} {
		cut := filepath.Join(t.TempDir(), "cut.tar")
		if err := os.WriteFile(cut, data[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadArchive(t.Context(), cut); err == nil || !strings.Contains(err.Error(), "cut.tar") {
			t.Errorf("truncated at %d: err = %v", n, err)
		}
	}
}

// TestReadNestedIndex reads an OCI layout whose index.json points at a
// multi-platform index: the linux/amd64 (host) image is chosen.
func TestReadNestedIndex(t *testing.T) {
	images := twoImages(t)[:1]
	path := filepath.Join(t.TempDir(), "oci.tar")
	if err := WriteOCI(t.Context(), path, images, Compression{}); err != nil {
		t.Fatal(err)
	}
	idx, ix := archiveIndex(t, path)
	host := idx.Manifests[0]
	host.Annotations = nil
	host.Platform = &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	other := v1.Descriptor{MediaType: host.MediaType, Size: 10, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("b", 64)},
		Platform: &v1.Platform{OS: "linux", Architecture: "s390x-none"}}
	nested := jsonBytes(t, v1.IndexManifest{SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json", Manifests: []v1.Descriptor{other, host}})
	nestedDigest := sha(nested)
	top := jsonBytes(t, v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{{
		MediaType: "application/vnd.oci.image.index.v1+json", Digest: v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(nestedDigest, "sha256:")},
		Size: int64(len(nested)), Annotations: map[string]string{annotationRefName: "example.com/multi:1"}}}})
	members := []member{{name: "oci-layout", body: `{"imageLayoutVersion":"1.0.0"}`}, {name: "index.json", body: string(top)},
		{name: "blobs/sha256/" + strings.TrimPrefix(nestedDigest, "sha256:"), body: string(nested)}}
	for n := range ix.entries {
		if strings.HasPrefix(n, "blobs/sha256/") {
			data, err := ix.readAll(n, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			members = append(members, member{name: n, body: string(data)})
		}
	}
	got, err := ReadArchive(t.Context(), writeArchive(t, members))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || mustDigest(t, got[0].Image) != host.Digest || len(got[0].Tags) != 1 || got[0].Tags[0] != "example.com/multi:1" {
		t.Fatalf("got %+v", got)
	}
	checkImage(t, got[0].Image)
}
