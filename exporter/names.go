package exporter

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// imageName is a normalised tag reference.
type imageName struct {
	tag name.Tag
}

// parseTag normalises s like docker: "busybox" is
// "docker.io/library/busybox:latest". Digest references are refused.
func parseTag(s string) (imageName, error) {
	t, err := name.NewTag(s, name.WeakValidation)
	if err != nil {
		return imageName{}, fmt.Errorf("parse image name %q: %w", s, err)
	}
	if strings.Contains(s, "@") {
		return imageName{}, fmt.Errorf("parse image name %q: a digest reference is not a tag", s)
	}
	return imageName{tag: t}, nil
}

func (n imageName) registry() string {
	r := n.tag.Context().RegistryStr()
	if r == name.DefaultRegistry {
		return "docker.io"
	}
	return r
}

// Full is the fully qualified name: "docker.io/library/app:v1".
func (n imageName) Full() string {
	return n.registry() + "/" + n.tag.Context().RepositoryStr() + ":" + n.tag.TagStr()
}

// Repo is the familiar repository name: "app", "user/app",
// "localhost:5000/app".
func (n imageName) Repo() string {
	repo := n.tag.Context().RepositoryStr()
	if n.registry() != "docker.io" {
		return n.registry() + "/" + repo
	}
	return strings.TrimPrefix(repo, "library/")
}

// Familiar is the short form docker shows: "app:v1".
func (n imageName) Familiar() string { return n.Repo() + ":" + n.tag.TagStr() }

// Tag is the tag alone: "v1".
func (n imageName) Tag() string { return n.tag.TagStr() }

// parseTags normalises a list of tags, dropping duplicates.
func parseTags(tags []string) ([]imageName, error) {
	seen := map[string]bool{}
	var out []imageName
	for _, s := range tags {
		n, err := parseTag(s)
		if err != nil {
			return nil, err
		}
		if !seen[n.Full()] {
			seen[n.Full()] = true
			out = append(out, n)
		}
	}
	return out, nil
}
