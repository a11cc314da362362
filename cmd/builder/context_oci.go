package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/builder-dev/builder/planner"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// refNameAnnotation names an image of an OCI layout's index.json.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// loadLayoutContexts stores the image of every oci-layout:// named
// context in the local store and points the context at it by digest, so
// that it resolves like a docker-image:// context.
func loadLayoutContexts(ctx context.Context, st *stores, contexts []planner.NamedContext, platform v1.Platform) error {
	for i := range contexts {
		nc := &contexts[i]
		if nc.Layout == "" {
			continue
		}
		img, err := layoutImage(nc.Layout, platform)
		if err != nil {
			return fmt.Errorf("build context %s: oci-layout://%s: %w", nc.Name, nc.Layout, err)
		}
		d, err := st.images.Import(ctx, img)
		if err != nil {
			return fmt.Errorf("build context %s: oci-layout://%s: %w", nc.Name, nc.Layout, err)
		}
		nc.Image = d.String()
	}
	return nil
}

// layoutImage finds the image of an OCI layout reference, as buildx takes
// it: DIR@DIGEST (a manifest, or an index holding one for the platform),
// DIR:TAG (the index.json entry of that ref name) or DIR (tag latest).
func layoutImage(ref string, platform v1.Platform) (v1.Image, error) {
	dir, dgst, tag := splitLayoutRef(ref)
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	match := func(d v1.Descriptor) bool {
		if dgst != "" {
			return d.Digest.String() == dgst
		}
		return d.Annotations[refNameAnnotation] == tag
	}
	return findImage(idx, match, platform, 0)
}

// splitLayoutRef splits DIR@DIGEST, DIR:TAG and DIR.
func splitLayoutRef(ref string) (dir, digest, tag string) {
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		return ref[:i], ref[i+1:], ""
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], "", ref[i+1:]
	}
	return ref, "", "latest"
}

// findImage finds the descriptor match selects in idx or its nested
// indexes; an index it selects gives its image for platform.
func findImage(idx v1.ImageIndex, match func(v1.Descriptor) bool, platform v1.Platform, depth int) (v1.Image, error) {
	if depth > 4 {
		return nil, errors.New("indexes nested too deep")
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range m.Manifests {
		if match(d) {
			if d.MediaType.IsIndex() {
				child, err := idx.ImageIndex(d.Digest)
				if err != nil {
					return nil, err
				}
				return platformImage(child, platform)
			}
			return idx.Image(d.Digest)
		}
		if d.MediaType.IsIndex() {
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			if img, err := findImage(child, match, platform, depth+1); err == nil {
				return img, nil
			}
		}
	}
	return nil, errors.New("no such image in the layout")
}

// platformImage picks the image of an index for platform; an index of
// one image without a platform gives that image.
func platformImage(idx v1.ImageIndex, platform v1.Platform) (v1.Image, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var images []v1.Descriptor
	for _, d := range m.Manifests {
		if d.MediaType.IsImage() && (d.Platform == nil || d.Annotations["vnd.docker.reference.type"] != "attestation-manifest") {
			images = append(images, d)
		}
	}
	for _, d := range images {
		if d.Platform != nil && d.Platform.OS == platform.OS && d.Platform.Architecture == platform.Architecture &&
			(platform.Variant == "" || d.Platform.Variant == platform.Variant) {
			return idx.Image(d.Digest)
		}
	}
	if len(images) == 1 && images[0].Platform == nil {
		return idx.Image(images[0].Digest)
	}
	return nil, fmt.Errorf("no image for platform %s/%s in the index", platform.OS, platform.Architecture)
}
