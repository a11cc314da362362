package attest

import (
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Predicate is an SLSA v1 provenance predicate with BuildKit's
// extensions, field for field as BuildKit encodes it.
type Predicate struct {
	BuildDefinition BuildDefinition `json:"buildDefinition"`
	RunDetails      RunDetails      `json:"runDetails"`
}

type BuildDefinition struct {
	BuildType            string               `json:"buildType"`
	ExternalParameters   ExternalParameters   `json:"externalParameters"`
	InternalParameters   InternalParameters   `json:"internalParameters"`
	ResolvedDependencies []ResourceDescriptor `json:"resolvedDependencies,omitempty"`
}

type ExternalParameters struct {
	ConfigSource ConfigSource `json:"configSource"`
	Request      Request      `json:"request"`
}

// ConfigSource is where the build definition came from: the context URL
// (remote contexts), its digest and the Dockerfile's path in it.
type ConfigSource struct {
	URI    string            `json:"uri,omitempty"`
	Digest map[string]string `json:"digest,omitempty"`
	Path   string            `json:"path,omitempty"`
}

// Request is the build request: frontend, its options, the local
// directories, secrets and ssh ids.
type Request struct {
	Frontend             string            `json:"frontend,omitempty"`
	Args                 map[string]string `json:"args,omitempty"`
	Secrets              []Secret          `json:"secrets,omitempty"`
	SSH                  []SSH             `json:"ssh,omitempty"`
	Locals               []Local           `json:"locals,omitempty"`
	CompatibilityVersion int               `json:"compatibilityVersion,omitempty"`
}

type Local struct {
	Name string `json:"name"`
}

type InternalParameters struct {
	BuildConfig       *BuildConfig `json:"buildConfig,omitempty"`
	BuilderPlatform   string       `json:"builderPlatform"`
	TargetPlatform    string       `json:"targetPlatform,omitempty"`
	DockerfileVersion string       `json:"dockerfileVersion,omitempty"`
}

// BuildConfig lists the build's steps. BuildKit's entries carry LLB
// operations; builder has no LLB, so its entries are the steps' IDs and
// inputs, which the source locations and layers refer to.
type BuildConfig struct {
	Definition []BuildStep `json:"llbDefinition,omitempty"`
}

type BuildStep struct {
	ID     string   `json:"id,omitempty"`
	Inputs []string `json:"inputs,omitempty"`
}

// ResourceDescriptor is a material: a URI and its digests.
type ResourceDescriptor struct {
	URI    string            `json:"uri,omitempty"`
	Digest map[string]string `json:"digest,omitempty"`
}

type RunDetails struct {
	Builder  Builder      `json:"builder"`
	Metadata *RunMetadata `json:"metadata,omitempty"`
}

type Builder struct {
	ID      string            `json:"id"`
	Version map[string]string `json:"version,omitempty"`
}

type RunMetadata struct {
	InvocationID string           `json:"invocationId,omitempty"`
	StartedOn    *time.Time       `json:"startedOn,omitempty"`
	FinishedOn   *time.Time       `json:"finishedOn,omitempty"`
	BuildKit     BuildKitMetadata `json:"buildkit_metadata"`
	Hermetic     bool             `json:"buildkit_hermetic,omitempty"`
	Completeness Completeness     `json:"buildkit_completeness"`
	Reproducible bool             `json:"buildkit_reproducible,omitempty"`
}

type Completeness struct {
	Request              bool `json:"request"`
	ResolvedDependencies bool `json:"resolvedDependencies"`
}

// BuildKitMetadata is BuildKit's extension of the run metadata.
type BuildKitMetadata struct {
	VCS    map[string]string            `json:"vcs,omitempty"`
	Source *Source                      `json:"source,omitempty"`
	Layers map[string][][]v1.Descriptor `json:"layers,omitempty"`
}

// Source maps steps to their Dockerfile lines and holds the Dockerfile.
type Source struct {
	Locations map[string]*Locations `json:"locations,omitempty"`
	Infos     []SourceInfo          `json:"infos,omitempty"`
}

type Locations struct {
	Locations []Location `json:"locations,omitempty"`
}

type Location struct {
	Ranges []Range `json:"ranges,omitempty"`
}

type Range struct {
	Start Position `json:"start"`
	End   Position `json:"end"`
}

type Position struct {
	Line int `json:"line"`
}

type SourceInfo struct {
	Filename string `json:"filename,omitempty"`
	Language string `json:"language,omitempty"`
	Data     []byte `json:"data,omitempty"`
}

// Predicate02 is the SLSA v0.2 form BuildKit converts its v1 predicate
// to (--attest type=provenance,version=v0.2).
type Predicate02 struct {
	Builder     Builder02            `json:"builder"`
	BuildType   string               `json:"buildType"`
	Invocation  Invocation02         `json:"invocation"`
	BuildConfig *BuildConfig         `json:"buildConfig,omitempty"`
	Metadata    *Metadata02          `json:"metadata,omitempty"`
	Materials   []ResourceDescriptor `json:"materials,omitempty"`
}

type Builder02 struct {
	ID string `json:"id"`
}

type Invocation02 struct {
	ConfigSource ConfigSource02 `json:"configSource"`
	Parameters   Request        `json:"parameters"`
	Environment  Environment02  `json:"environment"`
}

type ConfigSource02 struct {
	URI        string            `json:"uri,omitempty"`
	Digest     map[string]string `json:"digest,omitempty"`
	EntryPoint string            `json:"entryPoint,omitempty"`
}

type Environment02 struct {
	Platform          string `json:"platform"`
	DockerfileVersion string `json:"dockerfileVersion,omitempty"`
}

type Metadata02 struct {
	BuildInvocationID string           `json:"buildInvocationID,omitempty"`
	BuildStartedOn    *time.Time       `json:"buildStartedOn,omitempty"`
	BuildFinishedOn   *time.Time       `json:"buildFinishedOn,omitempty"`
	Completeness      Completeness02   `json:"completeness"`
	Reproducible      bool             `json:"reproducible"`
	BuildKit          BuildKitMetadata `json:"https://mobyproject.org/buildkit@v1#metadata"`
	Hermetic          bool             `json:"https://mobyproject.org/buildkit@v1#hermetic,omitempty"`
}

type Completeness02 struct {
	Parameters  bool `json:"parameters"`
	Environment bool `json:"environment"`
	Materials   bool `json:"materials"`
}

// slsa02 converts the predicate to SLSA v0.2 as BuildKit does.
func (p *Predicate) slsa02() *Predicate02 {
	out := &Predicate02{
		Builder:   Builder02{ID: p.RunDetails.Builder.ID},
		BuildType: BuildType02,
		Materials: p.BuildDefinition.ResolvedDependencies,
		Invocation: Invocation02{
			ConfigSource: ConfigSource02{
				URI:        p.BuildDefinition.ExternalParameters.ConfigSource.URI,
				Digest:     p.BuildDefinition.ExternalParameters.ConfigSource.Digest,
				EntryPoint: p.BuildDefinition.ExternalParameters.ConfigSource.Path,
			},
			Parameters: p.BuildDefinition.ExternalParameters.Request,
			Environment: Environment02{
				Platform:          p.BuildDefinition.InternalParameters.BuilderPlatform,
				DockerfileVersion: p.BuildDefinition.InternalParameters.DockerfileVersion,
			},
		},
		BuildConfig: p.BuildDefinition.InternalParameters.BuildConfig,
	}
	if m := p.RunDetails.Metadata; m != nil {
		out.Metadata = &Metadata02{
			BuildInvocationID: m.InvocationID,
			BuildStartedOn:    m.StartedOn,
			BuildFinishedOn:   m.FinishedOn,
			Completeness: Completeness02{
				Parameters:  m.Completeness.Request,
				Environment: true,
				Materials:   m.Completeness.ResolvedDependencies,
			},
			Reproducible: m.Reproducible,
			BuildKit:     m.BuildKit,
			Hermetic:     m.Hermetic,
		}
	}
	return out
}
