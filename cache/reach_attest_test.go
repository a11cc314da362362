package cache

import (
	"encoding/json"
	"testing"
)

// A tagged image's attestations (the index linked from the Attestations
// area, its attestation manifest and statements) live as long as the
// image is tagged: prune --all keeps them, and removes them once the tag
// is gone.
func TestPruneKeepsAttestationsOfTaggedImages(t *testing.T) {
	f := newPruneFixture(t)
	ctx := t.Context()
	stmt := mustWriteBlob(t, f.s, []byte(`{"_type":"https://in-toto.io/Statement/v1"}`))
	empty := mustWriteBlob(t, f.s, []byte("{}"))
	att := writeManifest(t, f.s, empty, stmt)
	idx, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaTypeOCIIndex, "manifests": []map[string]any{
		{"mediaType": mediaTypeOCIManifest, "digest": f.image[0], "size": 1},
		{"mediaType": mediaTypeOCIManifest, "digest": att, "size": 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	idxDigest := mustWriteBlob(t, f.s, idx)
	if err := f.s.WriteAreaFile(ctx, Attestations, f.image[0][len("sha256:"):], []byte(idxDigest)); err != nil {
		t.Fatal(err)
	}
	if got := f.s.AttestationIndex(f.image[0]); got != idxDigest {
		t.Fatalf("AttestationIndex = %q, want %s", got, idxDigest)
	}
	if got := f.s.AttestationIndex("sha256:../../x"); got != "" {
		t.Errorf("AttestationIndex of a hostile digest = %q", got)
	}
	if _, err := f.s.Prune(ctx, PruneOptions{All: true, RemoveLayer: f.layers.remove}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{idxDigest, att, stmt, empty} {
		if !f.s.HasBlob(b) {
			t.Errorf("prune removed %s of a tagged image's attestations", b)
		}
	}
	if err := f.s.RemoveTag(ctx, "app:v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.Prune(ctx, PruneOptions{All: true, RemoveLayer: f.layers.remove}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{idxDigest, att, stmt} {
		if f.s.HasBlob(b) {
			t.Errorf("prune kept %s after the image's tag was removed", b)
		}
	}
}
