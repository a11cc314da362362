package exporter

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/fuzztest"
)

// TestFuzzSeeds is the generator of testdata/fuzz/FuzzLoad: archives that
// builder writes (docker and OCI), minimal hand-made ones, and hostile
// shapes (members escaping the archive, link cycles, index loops, digest
// and diff_id mismatches, layers that climb out of the root, truncation).
// It fails when a seed file is missing and rewrites them with
//
//	go test ./exporter -run TestFuzzSeeds -update-fuzz-seeds
func TestFuzzSeeds(t *testing.T) {
	var seeds []fuzztest.Seed
	add := func(name string, data []byte) {
		seeds = append(seeds, fuzztest.Seed{Name: name, Args: []any{data}})
	}
	ls := newFakeLayers()
	img := Tagged{Image: testImage(t, ls, map[string]string{"hello": "hi"}), Tags: []string{"app:v1", "localhost:5000/x/y:z"}}
	for _, format := range []string{"docker", "oci"} {
		p := filepath.Join(t.TempDir(), "out.tar")
		write := WriteDocker
		if format == "oci" {
			write = func(ctx context.Context, p string, t []Tagged) error { return WriteOCI(ctx, p, t, Compression{}) }
		}
		if err := write(t.Context(), p, []Tagged{img}); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		add("written-by-builder-"+format, fzNoEnd(data))
		add("written-by-builder-"+format+"-truncated", data[:len(data)/2])
	}

	empty := fzLayer(t) // an empty layer: no entries, just the end blocks
	hostile := fzLayer(t, fzMember{name: "../../victim/secret", body: "pwned"}, fzMember{name: "ok", body: "ok"})
	through := fzLayer(t, fzMember{name: "l", link: "../../victim", typ: tar.TypeSymlink}, fzMember{name: "l/secret", body: "pwned"})
	abs := fzLayer(t, fzMember{name: "etc", link: "/etc", typ: tar.TypeSymlink}, fzMember{name: "etc/passwd", body: "pwned"})
	whiteout := fzLayer(t, fzMember{name: ".wh..wh..opq"}, fzMember{name: ".wh.victim"}, fzMember{name: "a/.wh..."})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(fzLayer(t, fzMember{name: "f", body: "gz"}))
	_ = zw.Close()

	for _, s := range []struct {
		name   string
		layers [][]byte
		tags   []string
	}{
		{"legacy-empty-layer", [][]byte{empty}, []string{"a:b"}},
		{"legacy-no-layers-no-tags", nil, nil},
		{"legacy-escaping-layer", [][]byte{hostile}, []string{"a:b"}},
		{"legacy-symlink-then-file-layer", [][]byte{through, empty}, nil},
		{"legacy-absolute-symlink-layer", [][]byte{abs}, []string{"x"}},
		{"legacy-whiteouts-layer", [][]byte{empty, whiteout}, nil},
		{"legacy-gzip-layer", [][]byte{gz.Bytes()}, []string{"g:z"}},
		{"legacy-bad-tags", [][]byte{empty}, []string{"UPPER:case", "a:b:c", "", "x@sha256:zz"}},
	} {
		add(s.name, fzLegacy(t, s.layers, s.tags))
		add(strings.Replace(s.name, "legacy", "oci", 1), fzOCI(t, s.layers, s.tags))
	}

	cfg := fzConfig(t, [][]byte{empty})
	manifest := func(config string, layers ...string) []byte {
		return fzJSON(t, []map[string]any{{"Config": config, "RepoTags": []string{"a:b"}, "Layers": layers}})
	}
	for _, s := range []struct {
		name    string
		members []fzMember
	}{
		{"legacy-config-escapes", []fzMember{{name: "manifest.json", body: string(manifest("../etc/passwd", "l.tar"))}, {name: "l.tar", body: string(empty)}}},
		{"legacy-config-absolute", []fzMember{{name: "manifest.json", body: string(manifest("/etc/passwd", "l.tar"))}}},
		{"legacy-layer-symlink-out", []fzMember{{name: "manifest.json", body: string(manifest("c.json", "l.tar"))}, {name: "c.json", body: string(cfg)},
			{name: "l.tar", link: "../../victim/secret", typ: tar.TypeSymlink}}},
		{"legacy-symlink-cycle", []fzMember{{name: "manifest.json", body: string(manifest("c.json", "a"))}, {name: "c.json", body: string(cfg)},
			{name: "a", link: "b", typ: tar.TypeSymlink}, {name: "b", link: "a", typ: tar.TypeSymlink}}},
		{"legacy-hardlink-chain", []fzMember{{name: "manifest.json", body: string(manifest("c.json", "x/l.tar"))}, {name: "c.json", body: string(cfg)},
			{name: "real.tar", body: string(empty)}, {name: "h1", link: "real.tar", typ: tar.TypeLink}, {name: "x/l.tar", link: "h1", typ: tar.TypeLink}}},
		{"legacy-manifest-is-dir", []fzMember{{name: "manifest.json/", typ: tar.TypeDir}}},
		{"legacy-manifest-not-json", []fzMember{{name: "manifest.json", body: `[{"Config": 1, "Layers": {}}`}}},
		{"legacy-diffid-count-mismatch", []fzMember{{name: "manifest.json", body: string(manifest("c.json", "l.tar", "l.tar"))}, {name: "c.json", body: string(cfg)}, {name: "l.tar", body: string(empty)}}},
		{"legacy-diffid-mismatch", []fzMember{{name: "manifest.json", body: string(manifest("c.json", "l.tar"))}, {name: "c.json", body: string(cfg)}, {name: "l.tar", body: string(hostile)}}},
		{"no-manifest-no-index", []fzMember{{name: "repositories", body: "{}"}}},
		{"index-not-json", []fzMember{{name: "index.json", body: "{"}, {name: "oci-layout", body: `{"imageLayoutVersion":"1.0.0"}`}}},
		{"index-blob-missing", []fzMember{{name: "index.json", body: string(fzJSON(t, map[string]any{"schemaVersion": 2, "manifests": []any{
			map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + strings.Repeat("0", 64), "size": 2}}}))}}},
		{"index-huge-size", []fzMember{{name: "index.json", body: string(fzJSON(t, map[string]any{"schemaVersion": 2, "manifests": []any{
			map[string]any{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + strings.Repeat("0", 64), "size": int64(1) << 60}}}))}}},
		{"index-nested-too-deep", fzNested(t, 10)},
		{"entry-size-past-eof", []fzMember{{name: "manifest.json", body: "[]", size: 1 << 30}}},
	} {
		add(s.name, fzNoEnd(fzTar(t, s.members...)))
	}
	fuzztest.CheckSeeds(t, "FuzzLoad", seeds)
}

// fzMember is one archive member; typ 0 is a regular file.
type fzMember struct {
	name, body, link string
	typ              byte
	size             int64 // declared size when larger than the body
}

func fzTar(t *testing.T, members ...fzMember) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		typ := m.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Typeflag: typ, Name: m.name, Linkname: m.link, Mode: 0o644, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(m.body))
		}
		if m.size > 0 {
			hdr.Size = m.size
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if m.size > 0 {
			_, _ = buf.WriteString(m.body) // short content: the tar ends early
			return buf.Bytes()
		}
		if _, err := tw.Write([]byte(m.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fzLayer is a layer tar; unlike archives, it keeps its end blocks, which
// its digest covers.
func fzLayer(t *testing.T, members ...fzMember) []byte { return fzTar(t, members...) }

// fzNoEnd drops the end-of-archive blocks of an archive (a tar reader
// stops at the end of the stream as well); they cost 4 KiB in the quoted
// corpus file format.
func fzNoEnd(data []byte) []byte {
	if n := len(data); n >= 1024 && bytes.Count(data[n-1024:], []byte{0}) == 1024 {
		return data[:n-1024]
	}
	return data
}

func fzJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fzDigest(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

// fzConfig is an image config whose diff_ids are the uncompressed digests
// of layers (gzip ones decompressed).
func fzConfig(t *testing.T, layers [][]byte) []byte {
	t.Helper()
	diffIDs := []string{}
	for _, l := range layers {
		if bytes.HasPrefix(l, []byte{0x1f, 0x8b}) {
			zr, err := gzip.NewReader(bytes.NewReader(l))
			if err != nil {
				t.Fatal(err)
			}
			var raw bytes.Buffer
			if _, err := raw.ReadFrom(zr); err != nil {
				t.Fatal(err)
			}
			l = raw.Bytes()
		}
		diffIDs = append(diffIDs, fzDigest(l))
	}
	return fzJSON(t, map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
}

// fzLegacy is a docker-save archive of one image (manifest.json only).
func fzLegacy(t *testing.T, layers [][]byte, tags []string) []byte {
	t.Helper()
	cfg := fzConfig(t, layers)
	members := []fzMember{{name: "config.json", body: string(cfg)}}
	names := []string{}
	for i, l := range layers {
		n := fmt.Sprintf("layer%d/layer.tar", i)
		names = append(names, n)
		members = append(members, fzMember{name: n, body: string(l)})
	}
	m := fzJSON(t, []map[string]any{{"Config": "config.json", "RepoTags": tags, "Layers": names}})
	members = append([]fzMember{{name: "manifest.json", body: string(m)}}, members...)
	return fzNoEnd(fzTar(t, members...))
}

// fzOCI is an OCI layout archive of one image.
func fzOCI(t *testing.T, layers [][]byte, tags []string) []byte {
	t.Helper()
	cfg := fzConfig(t, layers)
	members := []fzMember{{name: "oci-layout", body: `{"imageLayoutVersion":"1.0.0"}`}, {name: "blobs/sha256/" + fzDigest(cfg)[7:], body: string(cfg)}}
	descs := []map[string]any{}
	for _, l := range layers {
		mt := "application/vnd.oci.image.layer.v1.tar"
		if bytes.HasPrefix(l, []byte{0x1f, 0x8b}) {
			mt += "+gzip"
		}
		descs = append(descs, map[string]any{"mediaType": mt, "digest": fzDigest(l), "size": len(l)})
		members = append(members, fzMember{name: "blobs/sha256/" + fzDigest(l)[7:], body: string(l)})
	}
	m := fzJSON(t, map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": fzDigest(cfg), "size": len(cfg)}, "layers": descs})
	members = append(members, fzMember{name: "blobs/sha256/" + fzDigest(m)[7:], body: string(m)})
	var entries []any
	for _, tag := range append([]string{""}, tags...) {
		entries = append(entries, map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": fzDigest(m), "size": len(m),
			"annotations": map[string]string{annotationImageName: tag, annotationRefName: tag}})
	}
	idx := fzJSON(t, map[string]any{"schemaVersion": 2, "manifests": entries})
	members = append(members, fzMember{name: "index.json", body: string(idx)})
	return fzNoEnd(fzTar(t, members...))
}

// fzNested is an OCI layout whose index.json starts a chain of n nested
// indexes (deeper than maxIndexDepth when n > 8).
func fzNested(t *testing.T, n int) []fzMember {
	t.Helper()
	members := []fzMember{{name: "oci-layout", body: `{"imageLayoutVersion":"1.0.0"}`}}
	child := map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + strings.Repeat("1", 64), "size": 2}
	for range n {
		idx := fzJSON(t, map[string]any{"schemaVersion": 2, "manifests": []any{child}})
		members = append(members, fzMember{name: "blobs/sha256/" + fzDigest(idx)[7:], body: string(idx)})
		child = map[string]any{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": fzDigest(idx), "size": len(idx)}
	}
	top := fzJSON(t, map[string]any{"schemaVersion": 2, "manifests": []any{child}})
	return append(members, fzMember{name: "index.json", body: string(top)})
}
