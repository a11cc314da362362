package exporter

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testAttest returns an Attest making two statements and recording the
// subject it was given.
func testAttest(got *v1.Descriptor) Attest {
	return func(_ v1.Image, subject v1.Descriptor) ([]Statement, error) {
		*got = subject
		return []Statement{
			{PredicateType: "https://slsa.dev/provenance/v1", Data: []byte(`{"_type":"https://in-toto.io/Statement/v1","n":1}`)},
			{PredicateType: "https://spdx.dev/Document", Data: []byte(`{"_type":"https://in-toto.io/Statement/v1","n":2}`)},
		}, nil
	}
}

// checkAttestedIndex checks an index of one image and its attestation
// manifest as BuildKit lays it out, reading blobs with read.
func checkAttestedIndex(t *testing.T, rawIdx []byte, img v1.Image, read func(v1.Hash) []byte) {
	t.Helper()
	var idx v1.IndexManifest
	if err := json.Unmarshal(rawIdx, &idx); err != nil {
		t.Fatal(err)
	}
	if idx.MediaType != types.OCIImageIndex || idx.SchemaVersion != 2 || len(idx.Manifests) != 2 {
		t.Fatalf("index %s", rawIdx)
	}
	im, at := idx.Manifests[0], idx.Manifests[1]
	if im.Digest != mustDigest(t, img) || im.Platform == nil || im.Platform.OS != "linux" || im.Platform.Architecture != "amd64" || im.MediaType != types.OCIManifestSchema1 {
		t.Errorf("image entry %+v, want %s with platform linux/amd64", im, mustDigest(t, img))
	}
	if at.Platform == nil || at.Platform.OS != "unknown" || at.Platform.Architecture != "unknown" ||
		at.Annotations[AnnotationReferenceType] != "attestation-manifest" || at.Annotations[AnnotationReferenceDigest] != im.Digest.String() {
		t.Errorf("attestation entry %+v", at)
	}
	raw := read(at.Digest)
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != "application/vnd.docker.attestation.manifest.v1+json" || m.MediaType != types.OCIManifestSchema1 {
		t.Errorf("attestation manifest %s", raw)
	}
	if m.Config.MediaType != "application/vnd.oci.empty.v1+json" || m.Config.Size != 2 || string(m.Config.Data) != "{}" ||
		m.Config.Digest.String() != "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" || !strings.Contains(string(raw), `"data":"e30="`) {
		t.Errorf("attestation config %+v", m.Config)
	}
	if m.Subject == nil || m.Subject.Digest != im.Digest || m.Subject.Size != im.Size || m.Subject.MediaType != im.MediaType {
		t.Errorf("attestation subject %+v, want %+v", m.Subject, im)
	}
	if len(m.Layers) != 2 {
		t.Fatalf("attestation layers %+v", m.Layers)
	}
	for i, want := range []string{"https://slsa.dev/provenance/v1", "https://spdx.dev/Document"} {
		l := m.Layers[i]
		if l.MediaType != "application/vnd.in-toto+json" || l.Annotations["in-toto.io/predicate-type"] != want || len(l.Annotations) != 1 {
			t.Errorf("layer %d %+v", i, l)
		}
		if got := string(read(l.Digest)); !strings.Contains(got, `"n":`+string(rune('1'+i))) {
			t.Errorf("statement %d = %s", i, got)
		}
	}
}

func TestAttestedIndex(t *testing.T) {
	img := testImage(t, newFakeLayers(), map[string]string{"a": "a"})
	var subject v1.Descriptor
	idx, err := AttestedIndex([]AttestedImage{{Image: img, Attest: testAttest(&subject)}})
	if err != nil {
		t.Fatal(err)
	}
	if subject.Digest != mustDigest(t, img) || subject.Platform == nil || subject.Platform.Architecture != "amd64" {
		t.Errorf("Attest got subject %+v", subject)
	}
	raw, _ := idx.RawManifest()
	checkAttestedIndex(t, raw, img, func(h v1.Hash) []byte {
		i, err := idx.Image(h)
		if err != nil {
			return layerBlob(t, idx, h)
		}
		b, _ := i.RawManifest()
		return b
	})
	// Without attestations: the image alone.
	idx, err = AttestedIndex([]AttestedImage{{Image: img}})
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := idx.IndexManifest(); len(m.Manifests) != 1 {
		t.Errorf("index without attestations: %+v", m.Manifests)
	}
}

// layerBlob finds the statement layer h among the index's images.
func layerBlob(t *testing.T, idx v1.ImageIndex, h v1.Hash) []byte {
	t.Helper()
	_, imgs, err := indexImages(idx)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		if l, err := img.LayerByDigest(h); err == nil {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			b, _ := io.ReadAll(rc)
			return b
		}
	}
	t.Fatalf("no blob %s", h)
	return nil
}

// An OCI archive of an attested image names the index in index.json (with
// the image's names) and holds every blob under it.
func TestWriteOCIAttested(t *testing.T) {
	img := testImage(t, newFakeLayers(), map[string]string{"a": "a"})
	var subject v1.Descriptor
	p := filepath.Join(t.TempDir(), "oci.tar")
	if err := WriteOCI(t.Context(), p, []Tagged{{Image: img, Tags: []string{"app:v1"}, Attest: testAttest(&subject)}}, Compression{}); err != nil {
		t.Fatal(err)
	}
	blobs := tarFiles(t, p)
	idx, err := OCIIndex(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].MediaType != types.OCIImageIndex || idx.Manifests[0].Annotations["io.containerd.image.name"] != "docker.io/library/app:v1" {
		t.Fatalf("index.json %+v", idx.Manifests)
	}
	read := func(h v1.Hash) []byte {
		b, ok := blobs["blobs/sha256/"+h.Hex]
		if !ok {
			t.Fatalf("archive lacks blob %s", h)
		}
		return b
	}
	inner := read(idx.Manifests[0].Digest)
	var im v1.IndexManifest
	if err := json.Unmarshal(inner, &im); err != nil {
		t.Fatal(err)
	}
	// The image in the archive is the gzip one: the subject is its manifest.
	if subject.Digest != im.Manifests[0].Digest {
		t.Errorf("statements made for %s, the archive holds %s", subject.Digest, im.Manifests[0].Digest)
	}
	var m v1.Manifest
	if err := json.Unmarshal(read(im.Manifests[0].Digest), &m); err != nil || m.Layers[0].MediaType != types.OCILayer {
		t.Fatalf("image manifest in the archive: %+v, %v", m, err)
	}
	gz, err := newRawImage(read(im.Manifests[0].Digest), read(m.Config.Digest), []v1.Layer{&fixedLayer{d: m.Layers[0]}})
	if err != nil {
		t.Fatal(err)
	}
	checkAttestedIndex(t, inner, gz, read)
}

// fixedLayer stands for a layer known by its descriptor only.
type fixedLayer struct {
	v1.Layer
	d v1.Descriptor
}

func (f *fixedLayer) Digest() (v1.Hash, error)            { return f.d.Digest, nil }
func (f *fixedLayer) Size() (int64, error)                { return f.d.Size, nil }
func (f *fixedLayer) MediaType() (types.MediaType, error) { return f.d.MediaType, nil }

func tarFiles(t *testing.T, p string) map[string][]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = b
	}
}

// The store keeps an image's attestations beside it: inspect shows them,
// the tag still names the image.
func TestStoreAttestations(t *testing.T) {
	st := newTestStore(t)
	img := testImage(t, newFakeLayers(), map[string]string{"a": "a"})
	digest, err := st.Put(t.Context(), img, []string{"app:v1"})
	if err != nil {
		t.Fatal(err)
	}
	if a, err := st.Attestations(t.Context(), "app:v1"); err != nil || a != nil {
		t.Fatalf("attestations before any: %+v, %v", a, err)
	}
	stored, err := st.Image(t.Context(), "app:v1")
	if err != nil {
		t.Fatal(err)
	}
	var subject v1.Descriptor
	idxDigest, err := st.PutAttestations(t.Context(), stored, testAttest(&subject))
	if err != nil {
		t.Fatal(err)
	}
	if subject.Digest != digest {
		t.Errorf("subject %s, want the stored manifest %s", subject.Digest, digest)
	}
	info, err := st.Inspect(t.Context(), "app:v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Digest != digest.String() || info.Attestations == nil || info.Attestations.Index != idxDigest.String() || len(info.Attestations.Statements) != 2 {
		t.Fatalf("inspect %+v %+v", info, info.Attestations)
	}
	s := info.Attestations.Statements[1]
	if s.PredicateType != "https://spdx.dev/Document" || !strings.Contains(string(s.Statement), `"n":2`) || s.Size != int64(len(s.Statement)) {
		t.Errorf("statement %+v", s)
	}
	rawIdx, err := st.blobs.ReadBlob(t.Context(), idxDigest.String())
	if err != nil {
		t.Fatal(err)
	}
	checkAttestedIndex(t, rawIdx, stored, func(h v1.Hash) []byte {
		b, err := st.blobs.ReadBlob(t.Context(), h.String())
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
	if d, err := st.blobs.ResolveTag(t.Context(), "app:v1"); err != nil || d != digest.String() {
		t.Errorf("tag names %s, %v; want the image %s", d, err, digest)
	}
}
