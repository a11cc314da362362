package exporter

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"

	"github.com/builder-dev/builder/cache"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// maxSources bounds the repositories remembered per blob (the most
// recent ones are kept).
const maxSources = 8

// blobSources is a sources/<hex>.json record: repositories
// ("registry/repository") that held the blob when last seen.
type blobSources struct {
	Repos []string `json:"repos"`
}

// sourcesOf returns the repositories known to hold the blob digest, most
// recent first. An unreadable record is empty: sources are a hint.
func (s *Store) sourcesOf(digest v1.Hash) []string {
	if s.sourcesDir == "" {
		return nil
	}
	var src blobSources
	data, err := os.ReadFile(filepath.Join(s.sourcesDir, digest.Hex+".json"))
	if err != nil || json.Unmarshal(data, &src) != nil {
		return nil
	}
	return src.Repos
}

// rememberSources records that repo holds the blobs digests. Failing to
// record is not an error: the next push uploads instead of mounting.
func (s *Store) rememberSources(ctx context.Context, repo name.Repository, digests []v1.Hash) {
	if s.sourcesDir == "" {
		return
	}
	r := repo.Name()
	for _, d := range digests {
		repos := s.sourcesOf(d)
		if len(repos) > 0 && repos[0] == r {
			continue
		}
		repos = slices.DeleteFunc(repos, func(x string) bool { return x == r })
		repos = append([]string{r}, repos...)
		if len(repos) > maxSources {
			repos = repos[:maxSources]
		}
		data, err := json.Marshal(blobSources{Repos: repos})
		if err != nil {
			continue
		}
		_ = s.blobs.WriteAreaFile(ctx, cache.Sources, d.Hex+".json", data)
	}
}

// layerDigests lists the digests of img's layers.
func layerDigests(img v1.Image) []v1.Hash {
	m, err := img.Manifest()
	if err != nil {
		return nil
	}
	out := make([]v1.Hash, 0, len(m.Layers))
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// mountable wraps each layer of layers that another repository of dst's
// registry is known to hold as a remote.MountableLayer, so remote.Write,
// after its HEAD finds the blob missing in dst, asks the registry to
// mount it from there (one request, no upload) before uploading it.
func (s *Store) mountable(layers []v1.Layer, dst name.Repository, o RemoteOptions) []v1.Layer {
	out := make([]v1.Layer, len(layers))
	for i, l := range layers {
		out[i] = l
		d, err := l.Digest()
		if err != nil {
			continue
		}
		for _, r := range s.sourcesOf(d) {
			src, err := name.NewRepository(r, name.WeakValidation)
			if err != nil || src.RegistryStr() != dst.RegistryStr() || src.RepositoryStr() == dst.RepositoryStr() {
				continue
			}
			if o.insecure(src.RegistryStr()) {
				src, err = name.NewRepository(r, name.WeakValidation, name.Insecure)
				if err != nil {
					continue
				}
			}
			out[i] = &remote.MountableLayer{Layer: l, Reference: src.Digest(d.String())}
			break
		}
	}
	return out
}
