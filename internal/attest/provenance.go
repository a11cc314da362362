package attest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BuildType is the buildType of BuildKit's SLSA v1 provenance (which
// builder's follows field for field), BuildType02 that of v0.2.
const (
	BuildType   = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
	BuildType02 = "https://mobyproject.org/buildkit@v1"
	// Frontend is the frontend a request names: builder reads
	// Dockerfiles as BuildKit's built-in Dockerfile frontend does.
	Frontend = "dockerfile.v0"
	// CompatibilityVersion is BuildKit v0.34's current compatibility
	// version, whose export formats (OCI artifact attestation manifests)
	// builder writes.
	CompatibilityVersion = 30
)

// Capture is what a build read and was asked: everything the provenance
// says. The caller fills it from the request, the plan and the record.
type Capture struct {
	// Args are the frontend options as buildx sends them: build-arg:K,
	// label:K, target, context:NAME, filename, no-cache, add-hosts,
	// force-network-mode, vcs:source, vcs:revision...
	Args map[string]string
	// Locals are the local directories the build read ("context",
	// "dockerfile", named local contexts).
	Locals []string
	Images []ImageSource
	Git    []GitSource
	HTTP   []HTTPSource
	// Secrets and SSH are the RUN --mount secrets and ssh ids (max mode).
	Secrets []Secret
	SSH     []SSH
	// NetworkAccess says a RUN step ran with a network.
	NetworkAccess bool
	// BuilderPlatform and TargetPlatform as PlatformString formats them.
	BuilderPlatform, TargetPlatform string
	DockerfileVersion               string
	// Builder is the builder's version (runDetails.builder.version).
	Builder string
	// InvocationID is the build's ID; Started and Finished its times.
	InvocationID      string
	Started, Finished time.Time
	// Steps describe the build for max mode: the Dockerfile, its steps,
	// their lines and layers.
	Dockerfile     []byte
	DockerfileName string
	Steps          []Step
}

// ImageSource is an image the build read. Ref is as normalized by the
// reference library (docker.io/library/busybox:latest); Local marks an
// image of an OCI layout (pkg:oci).
type ImageSource struct {
	Ref      string
	Platform *v1.Platform
	Digest   string
	Local    bool
}

// GitSource is a Git repository read at a commit: URL is the remote with
// the ref as fragment (https://host/repo.git#v1).
type GitSource struct {
	URL, Commit string
}

// HTTPSource is a download (ADD URL) and the digest of its content.
type HTTPSource struct {
	URL, Digest string
}

// Secret and SSH name a RUN --mount secret or ssh agent; Optional unless
// the mount says required=true.
type Secret struct {
	ID       string `json:"id"`
	Optional bool   `json:"optional,omitempty"`
}

type SSH struct {
	ID       string `json:"id"`
	Optional bool   `json:"optional,omitempty"`
}

// Step is one step of the build (a vertex): its ID (step0, step1...),
// the steps it reads, its Dockerfile lines and, when it made one, the
// image's layers after it.
type Step struct {
	ID     string
	Inputs []string
	Lines  [][2]int // first and last line of each source range
	Layers []v1.Descriptor
}

// ProvenanceOptions are the attributes of --attest type=provenance.
type ProvenanceOptions struct {
	Mode         string // "min" or "max"
	Version      string // "v1" or "v0.2"
	BuilderID    string
	Reproducible bool
	InlineOnly   bool
	Filename     string
}

// Provenance returns the provenance attestation of a build.
func Provenance(c *Capture, o ProvenanceOptions) (Attestation, error) {
	p, err := newPredicate(c, o)
	if err != nil {
		return Attestation{}, err
	}
	var v any = p
	typ := PredicateSLSA1
	if o.Version == "v0.2" {
		v, typ = p.slsa02(), PredicateSLSA02
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return Attestation{}, fmt.Errorf("encode provenance: %w", err)
	}
	name := o.Filename
	if name == "" {
		name = "provenance.json"
	}
	return Attestation{PredicateType: typ, Predicate: data, Path: name, InlineOnly: o.InlineOnly}, nil
}

func newPredicate(c *Capture, o ProvenanceOptions) (*Predicate, error) {
	deps, err := resolvedDependencies(c)
	if err != nil {
		return nil, err
	}
	req, configSource, vcs := request(c)
	incomplete := len(c.Locals) > 0
	p := &Predicate{}
	bd := &p.BuildDefinition
	bd.BuildType = BuildType
	bd.ResolvedDependencies = deps
	bd.ExternalParameters = ExternalParameters{ConfigSource: configSource, Request: req}
	bd.InternalParameters = InternalParameters{
		BuilderPlatform:   c.BuilderPlatform,
		TargetPlatform:    c.TargetPlatform,
		DockerfileVersion: c.DockerfileVersion,
	}
	rd := &p.RunDetails
	rd.Builder.ID = o.BuilderID
	if c.Builder != "" {
		rd.Builder.Version = map[string]string{"builder": c.Builder}
	}
	started, finished := c.Started.UTC(), c.Finished.UTC()
	rd.Metadata = &RunMetadata{
		InvocationID: c.InvocationID,
		StartedOn:    &started,
		FinishedOn:   &finished,
		Completeness: Completeness{Request: true, ResolvedDependencies: !incomplete},
		Hermetic:     !incomplete && !c.NetworkAccess,
		Reproducible: o.Reproducible,
	}
	if len(vcs) > 0 {
		rd.Metadata.BuildKit.VCS = vcs
	}
	if o.Mode == "min" {
		if scrubMin(&bd.ExternalParameters.Request) {
			rd.Metadata.Completeness.Request = false
		}
		return p, nil
	}
	maxDetails(p, c)
	return p, nil
}

// request is the request part of the predicate: BuildKit moves the
// context URL into configSource.uri (with its material's digest), the
// Dockerfile's name into configSource.path and vcs:* into the metadata,
// and redacts credentials in URLs.
func request(c *Capture) (Request, ConfigSource, map[string]string) {
	args := map[string]string{}
	vcs := map[string]string{}
	var cs ConfigSource
	for k, v := range c.Args {
		switch {
		case k == "context" && v != "":
			cs.URI, cs.Digest = contextSource(c, v)
		case k == "filename" && v != "":
			cs.Path = v
		case strings.HasPrefix(k, "vcs:"):
			if k == "vcs:source" {
				v = RedactURL(v)
			}
			if v != "" {
				vcs[strings.TrimPrefix(k, "vcs:")] = v
			}
		case strings.HasPrefix(k, "attest:") || hostSpecificArgs[k]:
		case strings.HasPrefix(k, "context:"):
			args[k] = RedactURL(v)
		default:
			args[k] = v
		}
	}
	if len(args) == 0 {
		args = nil
	}
	r := Request{Frontend: Frontend, Args: args, CompatibilityVersion: CompatibilityVersion}
	for _, l := range slices.Sorted(slices.Values(c.Locals)) {
		r.Locals = append(r.Locals, Local{Name: l})
	}
	r.Secrets = slices.Clone(c.Secrets)
	slices.SortFunc(r.Secrets, func(a, b Secret) int { return cmp.Compare(a.ID, b.ID) })
	r.SSH = slices.Clone(c.SSH)
	slices.SortFunc(r.SSH, func(a, b SSH) int { return cmp.Compare(a.ID, b.ID) })
	return r, cs, vcs
}

// hostSpecificArgs are the frontend options BuildKit leaves out of the
// provenance: they describe the machine, not the build.
var hostSpecificArgs = map[string]bool{
	"cgroup-parent": true, "image-resolve-mode": true, "platform": true, "cache-imports": true,
}

// contextSource is the configSource of a remote context: its Git
// material (the URL in BuildKit's fragment form and the commit), else
// the URL as given.
func contextSource(c *Capture, v string) (string, map[string]string) {
	base, frag, _ := strings.Cut(v, "#")
	ref, _, _ := strings.Cut(frag, ":")
	want := base
	if ref != "" {
		want += "#" + ref
	}
	for _, g := range c.Git {
		if RedactURL(g.URL) == RedactURL(want) {
			return RedactURL(v), commitDigest(g.Commit)
		}
	}
	for _, h := range c.HTTP {
		if h.URL == v {
			return RedactURL(v), DigestSet(h.Digest)
		}
	}
	return RedactURL(v), nil
}

// scrubMin removes what min mode leaves out (build args, labels, secret
// and ssh ids) and reports whether it removed request arguments.
func scrubMin(r *Request) bool {
	removed := false
	if len(r.Args) > 0 {
		kept := map[string]string{}
		for k, v := range r.Args {
			if strings.HasPrefix(k, "build-arg:") || strings.HasPrefix(k, "label:") {
				removed = true
				continue
			}
			kept[k] = v
		}
		r.Args = kept
	}
	r.Secrets, r.SSH = nil, nil
	return removed
}

// maxDetails adds what max mode holds: the Dockerfile, the steps and
// their source lines, and each step's layers.
func maxDetails(p *Predicate, c *Capture) {
	cfg := &BuildConfig{}
	src := &Source{Locations: map[string]*Locations{}}
	layers := map[string][][]v1.Descriptor{}
	for _, s := range c.Steps {
		cfg.Definition = append(cfg.Definition, BuildStep{ID: s.ID, Inputs: s.Inputs})
		loc := &Locations{}
		if len(s.Lines) > 0 {
			l := Location{}
			for _, r := range s.Lines {
				l.Ranges = append(l.Ranges, Range{Start: Position{Line: r[0]}, End: Position{Line: r[1]}})
			}
			loc.Locations = []Location{l}
		}
		src.Locations[s.ID] = loc
		if len(s.Layers) > 0 {
			layers[s.ID+":0"] = [][]v1.Descriptor{s.Layers}
		}
	}
	if len(c.Dockerfile) > 0 {
		name := c.DockerfileName
		if name == "" {
			name = "Dockerfile"
		}
		src.Infos = []SourceInfo{{Filename: name, Language: "Dockerfile", Data: c.Dockerfile}}
	}
	p.BuildDefinition.InternalParameters.BuildConfig = cfg
	p.RunDetails.Metadata.BuildKit.Source = src
	if len(layers) > 0 {
		p.RunDetails.Metadata.BuildKit.Layers = layers
	}
}

// resolvedDependencies are the materials in BuildKit's order: images,
// Git sources, downloads, each sorted by reference or URL, each once.
func resolvedDependencies(c *Capture) ([]ResourceDescriptor, error) {
	var out []ResourceDescriptor
	for _, i := range optimizeImages(c.Images) {
		u, err := ImagePURL(i.Ref, i.Platform, i.Local)
		if err != nil {
			return nil, err
		}
		out = append(out, ResourceDescriptor{URI: u, Digest: DigestSet(i.Digest)})
	}
	git := map[string]GitSource{}
	for _, g := range c.Git {
		g.URL = RedactURL(g.URL)
		if _, ok := git[g.URL]; !ok {
			git[g.URL] = g
		}
	}
	for _, k := range slices.Sorted(maps.Keys(git)) {
		out = append(out, ResourceDescriptor{URI: k, Digest: commitDigest(git[k].Commit)})
	}
	http := map[string]HTTPSource{}
	for _, h := range c.HTTP {
		h.URL = RedactURL(h.URL)
		if _, ok := http[h.URL]; !ok {
			http[h.URL] = h
		}
	}
	for _, k := range slices.Sorted(maps.Keys(http)) {
		out = append(out, ResourceDescriptor{URI: k, Digest: DigestSet(http[k].Digest)})
	}
	return out, nil
}

// optimizeImages keeps each image once (by reference and platform),
// sorted by reference, without a digest reference whose name and tag
// is also there by tag (BuildKit's OptimizeImageSources).
func optimizeImages(imgs []ImageSource) []ImageSource {
	var out []ImageSource
	tagged := map[string]bool{}
	for _, i := range imgs {
		if n, err := reference.ParseNormalizedNamed(i.Ref); err == nil {
			if _, digested := n.(reference.Canonical); !digested {
				tagged[reference.TagNameOnly(n).String()] = true
			}
		}
	}
	seen := map[string]bool{}
	for _, i := range imgs {
		n, err := reference.ParseNormalizedNamed(i.Ref)
		if err == nil {
			if c, ok := n.(reference.Canonical); ok {
				if t, ok := n.(reference.Tagged); ok {
					if nt, err := reference.WithTag(reference.TrimNamed(c), t.Tag()); err == nil && tagged[nt.String()] {
						continue
					}
				} else if tagged[reference.TagNameOnly(reference.TrimNamed(c)).String()] {
					continue
				}
			}
		}
		key := fmt.Sprintf("%s|%v|%v", i.Ref, i.Local, platformKey(i.Platform))
		if !seen[key] {
			seen[key] = true
			out = append(out, i)
		}
	}
	slices.SortStableFunc(out, func(a, b ImageSource) int { return cmp.Compare(a.Ref, b.Ref) })
	return out
}

func platformKey(p *v1.Platform) string {
	if p == nil {
		return ""
	}
	return PlatformString(*p)
}

// commitDigest is a commit as a digest set: sha1, or sha256 for a
// repository in SHA-256 object format.
func commitDigest(commit string) map[string]string {
	if len(commit) == 64 {
		return map[string]string{"sha256": commit}
	}
	return map[string]string{"sha1": commit}
}

// RedactURL masks the credentials of a URL (user:pass@ becomes
// xxxxx:xxxxx@) as BuildKit does; anything that is not a URL is kept.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	const mask = "xxxxx"
	name := u.User.Username()
	_, hasPass := u.User.Password()
	switch {
	case name != "" && hasPass:
		u.User = url.UserPassword(mask, mask)
	case name != "":
		u.User = url.User(mask)
	case hasPass:
		u.User = url.UserPassword(name, mask)
	}
	return u.String()
}
