package attest

import (
	"fmt"
	"strings"

	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/package-url/packageurl-go"
)

// ImagePURL is the package URL BuildKit gives an image reference:
// pkg:docker/NAMESPACE/NAME@TAG?platform=OS%2FARCH (a digest reference
// gets a digest= qualifier; a reference without tag is :latest), or
// pkg:oci/... for an image of an OCI layout (local). The name is the
// familiar one: docker.io/library/busybox is busybox.
func ImagePURL(ref string, p *v1.Platform, local bool) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("package URL of %q: %w", ref, err)
	}
	var q packageurl.Qualifiers
	if c, ok := named.(reference.Canonical); ok {
		q = append(q, packageurl.Qualifier{Key: "digest", Value: c.Digest().String()})
	} else {
		named = reference.TagNameOnly(named)
	}
	version := ""
	if t, ok := named.(reference.Tagged); ok {
		version = t.Tag()
	}
	name := reference.FamiliarName(named)
	ns := ""
	if i := strings.LastIndex(name, "/"); i >= 0 {
		ns, name = name[:i], name[i+1:]
	}
	if p != nil {
		q = append(q, packageurl.Qualifier{Key: "platform", Value: PlatformString(*p)})
	}
	typ := packageurl.TypeDocker
	if local {
		typ = packageurl.TypeOCI
	}
	return packageurl.NewPackageURL(typ, ns, name, version, q, "").ToString(), nil
}

// PlatformString formats a platform as BuildKit does (containerd's
// normalized form: linux/amd64, linux/arm64, linux/arm/v7).
func PlatformString(p v1.Platform) string {
	return platforms.Format(platforms.Normalize(ocispec.Platform{
		OS: p.OS, Architecture: p.Architecture, Variant: p.Variant, OSVersion: p.OSVersion,
	}))
}
