package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/executor"
	"github.com/builder-dev/builder/internal/attest"
	"github.com/builder-dev/builder/internal/gitsource"
	"github.com/builder-dev/builder/parser"
	"github.com/builder-dev/builder/planner"
	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	dockerfileversion "github.com/moby/buildkit/frontend/dockerfile/version"
)

// attestBuild is what a finished build's attestations are made of.
type attestBuild struct {
	a        *app
	f        *buildFlags
	in       *buildInputs
	st       *stores
	plan     *planner.Plan
	res      *executor.Result
	contexts []planner.NamedContext
	platform v1.Platform
	df       *parser.Dockerfile
	dfFile   string // the Dockerfile read ("-": stdin)
	notice   func(string)
}

// attestBuild is what the attestations of the finished build r are made
// of.
func (r *buildRun) attestBuild(plan *planner.Plan, res *executor.Result) attestBuild {
	return attestBuild{a: r.a, f: r.f, in: r.in, st: r.st, plan: plan, res: res, contexts: r.contexts,
		platform: r.platform, df: r.d.df, dfFile: r.d.file, notice: r.prog.Notice}
}

// prepareAttestations makes the build's attestations (nil when it makes
// none): the provenance and the SBOMs.
func prepareAttestations(ctx context.Context, b attestBuild) (*attestRun, error) {
	cfg := b.f.attest.cfg
	if cfg.Provenance == nil && cfg.SBOM == nil {
		return nil, nil
	}
	v, _ := buildVersion()
	r := &attestRun{tool: "builder-" + v}
	if cfg.SBOM != nil {
		atts, layers, err := scanSBOM(ctx, b)
		if err != nil {
			return nil, err
		}
		r.atts, r.sbomLayers = atts, layers
	}
	layered, err := hasLayers(b.res.Image)
	if err != nil {
		return nil, err
	}
	if cfg.Provenance != nil && layered {
		c, err := b.capture(ctx)
		if err != nil {
			return nil, err
		}
		o := *cfg.Provenance
		o.Reproducible = o.Reproducible || b.f.verifyReproducible
		p, err := attest.Provenance(c, o)
		if err != nil {
			return nil, err
		}
		r.atts = append(r.atts, p)
	}
	return r, nil
}

// hasLayers reports whether img has a root filesystem. BuildKit makes no
// provenance for a result without one (a nil ref: FROM scratch and only
// metadata instructions), single- or multi-platform: its image has no
// attestation manifest, its local and tar outputs no provenance.json.
func hasLayers(img v1.Image) (bool, error) {
	if img == nil {
		return true, nil // not exported yet: nothing to leave out
	}
	m, err := img.Manifest()
	if err != nil {
		return false, err
	}
	return len(m.Layers) > 0, nil
}

// capture gathers what the provenance says from the request, the plan
// and the build record.
func (b attestBuild) capture(ctx context.Context) (*attest.Capture, error) {
	rec := b.res.Record
	c := &attest.Capture{
		Args:              b.frontendArgs(),
		Locals:            b.locals(),
		BuilderPlatform:   attest.PlatformString(hostPlatform()),
		TargetPlatform:    attest.PlatformString(b.platform),
		DockerfileVersion: strings.TrimSuffix(dockerfileversion.Version(), "-dev"),
		Builder:           builderVersion(),
		InvocationID:      rec.ID,
		Started:           rec.Started,
		Finished:          time.Now(),
		DockerfileName:    b.frontendArgs()["filename"],
	}
	if rec.Request != nil {
		c.Dockerfile = []byte(rec.Request.DockerfileText)
	}
	if b.in.gitURL != "" {
		c.Git = append(c.Git, attest.GitSource{URL: gitMaterialURL(b.in.gitURL), Commit: b.in.gitCommit})
	}
	if b.in.httpURL != "" {
		c.HTTP = append(c.HTTP, attest.HTTPSource{URL: b.in.httpURL, Digest: b.in.httpDigest})
	}
	steps := recordSteps(rec)
	for _, st := range b.plan.Stages {
		b.stageSources(c, st, steps)
	}
	var err error
	if c.Steps, err = b.steps(ctx, steps); err != nil {
		return nil, err
	}
	return c, nil
}

// frontendArgs are the frontend options buildx would send for this build.
func (b attestBuild) frontendArgs() map[string]string {
	f := b.f
	args := map[string]string{}
	switch {
	case !b.remote():
		if b.dfFile == "-" {
			args["filename"] = "Dockerfile"
		} else {
			args["filename"] = filepath.Base(b.dfFile)
		}
	case f.file != "":
		args["filename"] = f.file
	}
	if b.remote() {
		args["context"] = b.in.id
	}
	if f.target != "" {
		args["target"] = f.target
	}
	for _, kv := range resolvedArgs(f.buildArgs) {
		k, v, _ := strings.Cut(kv, "=")
		args["build-arg:"+k] = v
	}
	for k, v := range keyValues(f.labels) {
		args["label:"+k] = v
	}
	for _, kv := range f.buildContexts {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.Contains(v, "://") && !gitsource.IsGit(v) {
			v = "local:" + k
		}
		args["context:"+k] = v
	}
	switch {
	case f.noCache:
		args["no-cache"] = ""
	case len(f.noCacheFilter) > 0:
		args["no-cache"] = strings.Join(f.noCacheFilter, ",")
	}
	if len(f.addHosts) > 0 {
		args["add-hosts"] = strings.Join(f.addHosts, ",")
	}
	if f.network != "" && f.network != "default" {
		args["force-network-mode"] = f.network
	}
	if !b.remote() && b.in.id != "-" && recordRequest(b).GitCommit != "" {
		if src := gitRemote(b.in.dir); src != "" {
			args["vcs:source"] = src
		}
		args["vcs:revision"] = recordRequest(b).GitCommit + gitDirty(b.in.dir)
	}
	return args
}

// remote says the context is a Git or HTTP(S) URL (not a directory or
// standard input).
func (b attestBuild) remote() bool {
	return b.in.id != "-" && isRemoteContext(b.in.id)
}

func recordRequest(b attestBuild) *cache.BuildRequest {
	if b.res.Record.Request == nil {
		return &cache.BuildRequest{}
	}
	return b.res.Record.Request
}

// locals are the local directories the build read, as BuildKit names
// them: the context and the Dockerfile's directory, and named local
// contexts.
func (b attestBuild) locals() []string {
	var out []string
	if !b.remote() {
		out = append(out, "context", "dockerfile")
	}
	for _, nc := range b.contexts {
		if nc.Dir != "" && nc.URL == "" {
			out = append(out, nc.Name)
		}
	}
	return out
}

// gitRemote is the URL of the origin remote of the repository holding
// dir (buildx's vcs:source), "" without one.
func gitRemote(dir string) string {
	out, err := exec.Command("git", "-C", dir, "remote", "get-url", "origin").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// gitDirty is "-dirty" when the repository holding dir has uncommitted
// changes (buildx's vcs:revision suffix).
func gitDirty(dir string) string {
	out, err := exec.Command("git", "-C", dir, "status", "--porcelain", "--ignored=no").Output()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		return ""
	}
	return "-dirty"
}

// gitMaterialURL is a Git URL as BuildKit names the source: the remote
// with the ref as fragment, without subdirectory or query.
func gitMaterialURL(u string) string {
	ref, err := gitsource.Parse(u)
	if err != nil {
		return u
	}
	if ref.Ref != "" {
		return ref.Remote + "#" + ref.Ref
	}
	return ref.Remote
}

// recStepKey finds a plan step's record.
type recStepKey struct {
	stage, text string
	line        int
}

func recordSteps(rec *cache.BuildRecord) map[recStepKey]*cache.StepRecord {
	out := map[recStepKey]*cache.StepRecord{}
	for i := range rec.Steps {
		s := &rec.Steps[i]
		out[recStepKey{s.Stage, s.Instruction, s.Line}] = s
	}
	return out
}

// stageName is the executor's name of a stage in the record.
func stageName(st *planner.Stage) string {
	if st.Name != "" {
		return st.Name
	}
	return "stage-" + strconv.Itoa(st.Index)
}

// stageSources adds the images, downloads, Git sources, secrets, ssh ids
// and network use of one stage.
func (b attestBuild) stageSources(c *attest.Capture, st *planner.Stage, steps map[recStepKey]*cache.StepRecord) {
	p := st.Platform
	b.addSource(c, &st.Base, &p)
	for _, s := range st.Steps {
		if s.From != nil {
			b.addSource(c, s.From, &p)
		}
		for _, m := range s.MountFrom {
			b.addSource(c, &m, &p)
		}
		rs := steps[recStepKey{stageName(st), s.Text, s.Line}]
		switch cmd := s.Cmd.(type) {
		case *instructions.AddCommand:
			addSources(c, cmd.SourcePaths, rs)
		case *instructions.RunCommand:
			runSources(c, cmd)
			if rs != nil && rs.Inputs != nil && field(rs.Inputs, "network") != "none" {
				c.NetworkAccess = true
			}
		}
	}
}

// addSource adds what a stage starts from or a step reads: an image, or
// a named Git or HTTP(S) context with what it resolved to (a commit, the
// download's digest), each once.
func (b attestBuild) addSource(c *attest.Capture, src *planner.Source, p *v1.Platform) {
	b.addImage(c, src.Image, p)
	if src.Context == nil || b.in == nil {
		return
	}
	r, ok := b.in.named[src.Context.Name]
	switch {
	case !ok:
	case r.gitURL != "":
		g := attest.GitSource{URL: gitMaterialURL(r.gitURL), Commit: r.commit}
		if !slices.Contains(c.Git, g) {
			c.Git = append(c.Git, g)
		}
	case r.httpURL != "":
		h := attest.HTTPSource{URL: r.httpURL, Digest: r.digest}
		if !slices.Contains(c.HTTP, h) {
			c.HTTP = append(c.HTTP, h)
		}
	}
}

// addImage adds a resolved image: an image of an OCI layout context is
// BuildKit's pkg:oci source named after the context.
func (b attestBuild) addImage(c *attest.Capture, ii *planner.ImageInfo, p *v1.Platform) {
	if ii == nil || ii.Ref == "scratch" {
		return
	}
	for _, nc := range b.contexts {
		if nc.Layout != "" && nc.Image == ii.Ref {
			c.Images = append(c.Images, attest.ImageSource{Ref: nc.Name + "@" + ii.Digest, Platform: p, Digest: ii.Digest, Local: true})
			return
		}
	}
	ref := ii.Ref
	if n, err := reference.ParseNormalizedNamed(ref); err == nil {
		if _, digested := n.(reference.Digested); !digested {
			n = reference.TagNameOnly(n)
		}
		ref = n.String()
	}
	c.Images = append(c.Images, attest.ImageSource{Ref: ref, Platform: p, Digest: ii.Resolved()})
}

// addSources adds an ADD step's downloads and Git sources with what the
// build resolved them to (its record's inputs).
func addSources(c *attest.Capture, srcs []string, rs *cache.StepRecord) {
	if rs == nil || rs.Inputs == nil {
		return
	}
	for i, src := range srcs {
		key := "source." + strconv.Itoa(i)
		if u := field(rs.Inputs, key+".url"); u != "" {
			c.HTTP = append(c.HTTP, attest.HTTPSource{URL: u, Digest: field(rs.Inputs, key+".url.digest")})
		}
		if commit := field(rs.Inputs, key+".git"); commit != "" {
			c.Git = append(c.Git, attest.GitSource{URL: gitMaterialURL(src), Commit: commit})
		}
	}
}

// runSources adds the secrets and ssh agents a RUN mounts: optional
// unless required=true, ids as BuildKit derives them.
func runSources(c *attest.Capture, run *instructions.RunCommand) {
	for _, m := range instructions.GetMounts(run) {
		switch m.Type {
		case instructions.MountTypeSecret:
			id := m.CacheID
			if m.Source != "" {
				id = m.Source
			}
			if id == "" {
				id = filepath.Base(m.Target)
			}
			addSecret(c, attest.Secret{ID: id, Optional: !m.Required})
		case instructions.MountTypeSSH:
			id := m.CacheID
			if id == "" {
				id = "default"
			}
			addSSH(c, attest.SSH{ID: id, Optional: !m.Required})
		}
	}
}

func addSecret(c *attest.Capture, s attest.Secret) {
	for i := range c.Secrets {
		if c.Secrets[i].ID == s.ID {
			c.Secrets[i].Optional = c.Secrets[i].Optional && s.Optional
			return
		}
	}
	c.Secrets = append(c.Secrets, s)
}

func addSSH(c *attest.Capture, s attest.SSH) {
	for i := range c.SSH {
		if c.SSH[i].ID == s.ID {
			c.SSH[i].Optional = c.SSH[i].Optional && s.Optional
			return
		}
	}
	c.SSH = append(c.SSH, s)
}

// field is the value of an input field ("" when absent).
func field(in *cache.Inputs, name string) string {
	for _, f := range in.Fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// steps lists the build's steps for max mode: per stage, the FROM of an
// image and every instruction that makes a step, each reading the one
// before it (and the stage a COPY --from reads), with its lines and the
// image's layers after it.
func (b attestBuild) steps(ctx context.Context, steps map[recStepKey]*cache.StepRecord) ([]attest.Step, error) {
	var out []attest.Step
	last := map[int]string{}            // stage index → its last step's ID
	layers := map[int][]v1.Descriptor{} // stage index → its layers so far
	id := func() string { return "step" + strconv.Itoa(len(out)) }
	for _, st := range b.plan.Stages {
		prev := ""
		var chain []v1.Descriptor
		switch {
		case st.Base.Stage != nil:
			prev, chain = last[st.Base.Stage.Index], slices.Clone(layers[st.Base.Stage.Index])
		case st.Base.Image != nil && st.Base.Image.Ref != "scratch":
			base, err := b.baseLayers(ctx, st.Base.Image)
			if err != nil {
				return nil, err
			}
			chain = base
			prev = id()
			out = append(out, attest.Step{ID: prev, Lines: [][2]int{{st.Line, st.Line}}, Layers: slices.Clone(chain)})
		case st.Base.Context != nil: // the context's files, one layer
			if rs := steps[recStepKey{stageName(st), st.Text, st.Line}]; rs != nil && rs.Layer != "" {
				if h, err := v1.NewHash(rs.Layer); err == nil {
					chain = append(chain, v1.Descriptor{MediaType: types.OCIUncompressedLayer, Digest: h, Size: rs.Size})
				}
			}
			prev = id()
			out = append(out, attest.Step{ID: prev, Lines: [][2]int{{st.Line, st.Line}}, Layers: slices.Clone(chain)})
		}
		for _, s := range st.Steps {
			if s.Name == "" {
				continue
			}
			step := attest.Step{ID: id(), Lines: [][2]int{{s.Line, max(s.Line, s.EndLine)}}}
			if prev != "" {
				step.Inputs = append(step.Inputs, prev+":0")
			}
			if s.From != nil && s.From.Stage != nil && last[s.From.Stage.Index] != "" {
				step.Inputs = append(step.Inputs, last[s.From.Stage.Index]+":0")
			}
			if rs := steps[recStepKey{stageName(st), s.Text, s.Line}]; rs != nil && rs.Layer != "" {
				if h, err := v1.NewHash(rs.Layer); err == nil {
					chain = append(chain, v1.Descriptor{MediaType: types.OCIUncompressedLayer, Digest: h, Size: rs.Size})
					step.Layers = slices.Clone(chain)
				}
			}
			out = append(out, step)
			prev = step.ID
		}
		last[st.Index], layers[st.Index] = prev, chain
	}
	return out, nil
}

// baseLayers are the layers of a base image as the store holds it.
func (b attestBuild) baseLayers(ctx context.Context, ii *planner.ImageInfo) ([]v1.Descriptor, error) {
	img, err := b.st.images.Describe(ctx, ii.Digest)
	if err != nil {
		return nil, fmt.Errorf("provenance: base image %s: %w", ii.Ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("provenance: base image %s: %w", ii.Ref, err)
	}
	out := make([]v1.Descriptor, len(m.Layers))
	for i, l := range m.Layers {
		out[i] = v1.Descriptor{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size}
	}
	return out, nil
}

// builderVersion is the version the provenance names: the version and,
// when known, the revision ("v1.2.0", "dev+0123456789ab").
func builderVersion() string {
	v, rev := buildVersion()
	if rev != "" {
		v += "+" + rev
	}
	return v
}
