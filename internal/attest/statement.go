// Package attest makes the attestations of a build in BuildKit's format:
// in-toto statements whose predicate is an SLSA provenance (v1, or v0.2
// on request) or an SPDX SBOM, with the subjects BuildKit gives them. It
// knows nothing of where they are stored: the exporter attaches the
// statements to an image (an attestation manifest in an image index) or
// writes them beside a filesystem output.
package attest

import (
	"encoding/json"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The in-toto and predicate types BuildKit writes.
const (
	// StatementType is the in-toto statement version (ITE-6 v1).
	StatementType = "https://in-toto.io/Statement/v1"
	// MediaType is the media type of a statement blob (the in-toto
	// envelope's payload type), the layers of an attestation manifest.
	MediaType = "application/vnd.in-toto+json"
	// PredicateSLSA1 and PredicateSLSA02 are the SLSA provenance
	// predicate types; PredicateSPDX an SPDX document.
	PredicateSLSA1  = "https://slsa.dev/provenance/v1"
	PredicateSLSA02 = "https://slsa.dev/provenance/v0.2"
	PredicateSPDX   = "https://spdx.dev/Document"
)

// Attestation is one predicate of a build, before it is bound to what it
// attests (the statement's subjects).
type Attestation struct {
	PredicateType string
	Predicate     json.RawMessage
	// Path is the file name the statement gets in a filesystem output
	// (provenance.json, sbom.spdx.json, sbom-STAGE.spdx.json).
	Path string
	// InlineOnly marks buildx's default provenance: attached to images
	// (pushed, stored), never written by archive or filesystem outputs.
	InlineOnly bool
}

// Subject is what a statement attests: a name and its digests.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// Statement is an in-toto statement.
type Statement struct {
	Type          string          `json:"_type"`
	PredicateType string          `json:"predicateType"`
	Subject       []Subject       `json:"subject"`
	Predicate     json.RawMessage `json:"predicate"`
}

// Bind returns the statement of a for subjects (an empty list, never
// null, when there are none: BuildKit's statements of unnamed images).
func Bind(a Attestation, subjects []Subject) Statement {
	if subjects == nil {
		subjects = []Subject{}
	}
	return Statement{Type: StatementType, PredicateType: a.PredicateType, Subject: subjects, Predicate: a.Predicate}
}

// Marshal encodes a statement as BuildKit does for an image (compact).
func (s Statement) Marshal() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode %s statement: %w", s.PredicateType, err)
	}
	return b, nil
}

// ImageSubjects are the subjects of an image's statements: one per name
// the image is exported under (a package URL with the platform), each
// with the manifest digest. Unnamed images have none.
func ImageSubjects(names []string, p v1.Platform, manifest v1.Hash) ([]Subject, error) {
	var out []Subject
	for _, n := range names {
		if n == "" {
			continue
		}
		u, err := ImagePURL(n, &p, false)
		if err != nil {
			return nil, err
		}
		out = append(out, Subject{Name: u, Digest: digestSet(manifest)})
	}
	return out, nil
}

// digestSet is a digest as in-toto writes it: algorithm → hex.
func digestSet(h v1.Hash) map[string]string {
	return map[string]string{h.Algorithm: h.Hex}
}

// DigestSet parses "sha256:hex" into a digest set; nil if it is not one.
func DigestSet(d string) map[string]string {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok || alg == "" || hex == "" {
		return nil
	}
	return map[string]string{alg: hex}
}
