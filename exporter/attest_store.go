package exporter

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/attest"
)

// AttestationInfo is one stored statement of an image (inspect).
type AttestationInfo struct {
	PredicateType string `json:"predicateType"`
	Digest        string `json:"digest"`
	Size          int64  `json:"size"`
	// Statement is the in-toto statement itself.
	Statement json.RawMessage `json:"-"`
}

// Attestations are an image's stored attestations: the index holding the
// image and its attestation manifest, that manifest, its statements.
type Attestations struct {
	Index      string            `json:"index"`
	Manifest   string            `json:"manifest"`
	Statements []AttestationInfo `json:"statements"`
}

// PutAttestations stores the attestations of img, an image of the store:
// its attestation manifest (the stored manifest as subject), the index of
// both, and the link from the image to the index (the store's
// Attestations area), which prune follows while the image is tagged. The
// tag keeps naming the image itself, so everything that reads an image
// of the store reads it as before. It returns the index digest.
func (s *Store) PutAttestations(ctx context.Context, img v1.Image, attest Attest) (v1.Hash, error) {
	idx, err := AttestedIndex([]AttestedImage{{Image: img, Attest: attest}})
	if err != nil {
		return v1.Hash{}, fmt.Errorf("store attestations: %w", err)
	}
	descs, imgs, err := indexImages(idx)
	if err != nil {
		return v1.Hash{}, err
	}
	for i, d := range descs {
		if d.Annotations[AnnotationReferenceType] != ReferenceTypeAttestation {
			continue
		}
		if _, err := s.putImage(ctx, imgs[i]); err != nil {
			return v1.Hash{}, fmt.Errorf("store attestation manifest: %w", err)
		}
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	digest, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	if err := s.putBytes(ctx, raw, digest); err != nil {
		return v1.Hash{}, fmt.Errorf("store attestation index: %w", err)
	}
	imgDigest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	if err := s.blobs.WriteAreaFile(ctx, cache.Attestations, imgDigest.Hex, []byte(digest.String())); err != nil {
		return v1.Hash{}, err
	}
	return digest, nil
}

// Attestations returns the stored attestations of the image ref names;
// nil when it has none.
func (s *Store) Attestations(ctx context.Context, ref string) (*Attestations, error) {
	digest, err := s.resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	return s.attestationsOf(ctx, digest)
}

func (s *Store) attestationsOf(ctx context.Context, digest string) (*Attestations, error) {
	if s.c == nil {
		return nil, nil
	}
	idxDigest := s.c.AttestationIndex(digest)
	if idxDigest == "" {
		return nil, nil
	}
	return s.attestationsIn(ctx, idxDigest, digest)
}

// attestationsIn returns the attestations of the image digest held in the
// stored index idxDigest; nil when it holds none.
func (s *Store) attestationsIn(ctx context.Context, idxDigest, digest string) (*Attestations, error) {
	raw, err := s.blobs.ReadBlob(ctx, idxDigest)
	if err != nil {
		return nil, fmt.Errorf("attestations of %s: index %s: %w", digest, idxDigest, err)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("attestations of %s: index %s: %w", digest, idxDigest, err)
	}
	for _, d := range idx.Manifests {
		if d.Annotations[AnnotationReferenceType] == ReferenceTypeAttestation && d.Annotations[AnnotationReferenceDigest] == digest {
			return s.readAttestations(ctx, idxDigest, d.Digest.String())
		}
	}
	return nil, nil
}

func (s *Store) readAttestations(ctx context.Context, idx, manifest string) (*Attestations, error) {
	raw, err := s.blobs.ReadBlob(ctx, manifest)
	if err != nil {
		return nil, fmt.Errorf("attestation manifest %s: %w", manifest, err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("attestation manifest %s: %w", manifest, err)
	}
	out := &Attestations{Index: idx, Manifest: manifest, Statements: []AttestationInfo{}}
	for _, l := range m.Layers {
		data, err := s.blobs.ReadBlob(ctx, l.Digest.String())
		if err != nil {
			return nil, fmt.Errorf("attestation %s: %w", l.Digest, err)
		}
		out.Statements = append(out.Statements, AttestationInfo{
			PredicateType: l.Annotations[AnnotationPredicateType], Digest: l.Digest.String(), Size: l.Size, Statement: data,
		})
	}
	return out, nil
}

// rebind returns the Attest that sends the stored statements of an image
// (att) with the image as it is pushed to dst: each statement's subjects
// become dst's package URL with the pushed manifest's digest, as a build
// that pushed to dst would have written them; predicates are unchanged.
func rebind(att *Attestations, dst string) Attest {
	if att == nil || len(att.Statements) == 0 {
		return nil
	}
	return func(_ v1.Image, subject v1.Descriptor) ([]Statement, error) {
		p := v1.Platform{}
		if subject.Platform != nil {
			p = *subject.Platform
		}
		subjects, err := attest.ImageSubjects([]string{dst}, p, subject.Digest)
		if err != nil {
			return nil, err
		}
		out := make([]Statement, 0, len(att.Statements))
		for _, info := range att.Statements {
			var st attest.Statement
			if err := json.Unmarshal(info.Statement, &st); err != nil {
				return nil, fmt.Errorf("stored attestation %s: %w", info.Digest, err)
			}
			st.Subject = subjects
			data, err := st.Marshal()
			if err != nil {
				return nil, err
			}
			out = append(out, Statement{PredicateType: st.PredicateType, Data: data})
		}
		return out, nil
	}
}

// PredicateTypeOf maps the names `builder inspect --attestation` takes
// (provenance, sbom, or a predicate type URI) to a predicate type prefix.
func PredicateTypeOf(name string) string {
	switch strings.ToLower(name) {
	case "provenance", "slsa":
		return "https://slsa.dev/provenance/"
	case "sbom", "spdx":
		return "https://spdx.dev/Document"
	}
	return name
}
