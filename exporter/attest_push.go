package exporter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// PushAttested pushes img with its attestations to dst as BuildKit does:
// an image index of the image (as PushImage sends it: compressed, layers
// mounted or skipped) and its attestation manifest, the tag naming the
// index. It returns the index's descriptor (what the registry resolves
// dst to).
func (s *Store) PushAttested(ctx context.Context, img v1.Image, attest Attest, dst string, o RemoteOptions) (v1.Descriptor, error) {
	return s.PushIndex(ctx, []v1.Image{img}, attest, dst, o)
}

// PushIndex pushes the image index of imgs, the images of several
// platforms, each with its attestations (attest nil: none), to dst: every
// image as PushImage sends it (blobs the platforms share go once), then
// the index, which the tag names. It returns the index's descriptor.
func (s *Store) PushIndex(ctx context.Context, imgs []v1.Image, attest Attest, dst string, o RemoteOptions) (v1.Descriptor, error) {
	att := make([]AttestedImage, len(imgs))
	for i, img := range imgs {
		att[i] = AttestedImage{Image: img, Attest: attest}
	}
	return s.PushAttestedIndex(ctx, att, dst, o)
}

// PushAttestedIndex is PushIndex with attestations of each image's own.
func (s *Store) PushAttestedIndex(ctx context.Context, imgs []AttestedImage, dst string, o RemoteOptions) (v1.Descriptor, error) {
	d, err := s.pushIndex(ctx, imgs, dst, o)
	for _, img := range imgs {
		if blob, ok := damagedCopy(img.Image, err); ok {
			o.notify(fmt.Sprintf("the compressed copy %s of a layer was damaged and is removed; compressing the layer again", shortDigest(blob)))
			return s.pushIndex(ctx, imgs, dst, o)
		}
	}
	return d, err
}

func (s *Store) pushIndex(ctx context.Context, imgs []AttestedImage, dst string, o RemoteOptions) (v1.Descriptor, error) {
	r, err := o.parse(dst)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("push %s: %w", dst, err)
	}
	reg := r.Context().RegistryStr()
	outs := make([]AttestedImage, len(imgs))
	for i, img := range imgs {
		out, err := s.pushable(ctx, img.Image, r.Context(), o)
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("push %s to %s: %w", dst, reg, err)
		}
		outs[i] = AttestedImage{Image: out, Attest: img.Attest}
	}
	idx, err := AttestedIndex(outs)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("push %s: %w", dst, err)
	}
	wrap := o.WrapTransport
	o.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		if wrap != nil {
			rt = wrap(rt)
		}
		return noReferrersTag{rt}
	}
	if err := remote.WriteIndex(r, idx, o.remote(ctx, r.Context().Registry, remote.WithJobs(pushJobs))...); err != nil {
		return v1.Descriptor{}, fmt.Errorf("push %s to %s: %w", dst, reg, classify(err))
	}
	for _, out := range outs {
		s.rememberSources(ctx, r.Context(), layerDigests(out.Image))
	}
	d, err := partial.Descriptor(idx)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("push %s: %w", dst, err)
	}
	return v1.Descriptor{MediaType: d.MediaType, Size: d.Size, Digest: d.Digest}, nil
}

// noReferrersTag answers go-containerregistry's lookup of the Referrers
// API, made after it pushes a manifest with a subject (the attestation
// manifest), with an empty list: otherwise, on a registry without that
// API, it would add a "sha256-<digest>" tag listing the attestation (the
// OCI referrers tag scheme). BuildKit does not tag: the attestation is
// found through the index, which names it.
type noReferrersTag struct{ http.RoundTripper }

func (t noReferrersTag) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/referrers/") {
		return t.RoundTripper.RoundTrip(req)
	}
	body := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": []string{"application/vnd.oci.image.index.v1+json"}},
		Body:          io.NopCloser(bytes.NewReader([]byte(body))),
		ContentLength: int64(len(body)),
		Request:       req,
	}, nil
}
