package planner

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// NamedContext is a named build context (--build-context NAME=VALUE, as
// docker buildx): it replaces the stage or image called Name wherever the
// Dockerfile uses it. The planner sees a directory (Dir) or an image
// (Image); the caller turns URL and Layout into one of them first.
type NamedContext struct {
	Name  string // normalized like an image reference: "alpine", not "docker.io/library/alpine:latest"
	Dir   string // a local directory (a fetched URL's too)
	Image string // an image reference (docker-image://REF), resolved like a FROM image; "scratch" is the empty image
	// URL is a Git or HTTP(S) URL, which the caller fetches into Dir.
	URL string
	// Layout is an OCI layout reference DIR[@DIGEST|:TAG]
	// (oci-layout://), whose image the caller stores and names in Image.
	Layout string
	// Epoch is the context's time for SOURCE_DATE_EPOCH=NAME (a fetched
	// Git or HTTP context); nil for none.
	Epoch *time.Time
}

// ParseContext parses one --build-context value as docker buildx does:
// NAME=PATH, NAME=docker-image://REF, NAME=oci-layout://DIR[@DIGEST|:TAG],
// or NAME=URL (a Git or HTTP(S) URL). It does not touch the filesystem
// or the network; the caller makes Dir absolute and checks it, and
// fetches URL and Layout.
func ParseContext(s string) (NamedContext, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" || v == "" {
		return NamedContext{}, fmt.Errorf("build context %q: want NAME=PATH or NAME=docker-image://REF", s)
	}
	n, err := contextName(k)
	if err != nil {
		return NamedContext{}, fmt.Errorf("build context %q: invalid name: %w", s, err)
	}
	nc := NamedContext{Name: n}
	switch scheme, rest, _ := strings.Cut(v, "://"); {
	case scheme == "docker-image":
		if _, err := name.ParseReference(rest); err != nil {
			return NamedContext{}, fmt.Errorf("build context %q: %w", s, err)
		}
		nc.Image = rest
	case scheme == "oci-layout":
		if rest == "" {
			return NamedContext{}, fmt.Errorf("build context %q: oci-layout:// needs a directory", s)
		}
		nc.Layout = rest
	case scheme == "http" || scheme == "https" || scheme == "git" || scheme == "ssh" || scheme == "file" || strings.HasPrefix(v, "git@"):
		nc.URL = v
	case strings.Contains(v, "://") || strings.HasPrefix(v, "target:"):
		return NamedContext{}, fmt.Errorf("build context %q: unsupported context source (want a directory, docker-image://, oci-layout://, a Git or an HTTP(S) URL)", s)
	default:
		nc.Dir = v
	}
	return nc, nil
}

// contextName normalizes a context name or image reference the way
// buildkit's dockerui.NamedContext does: the familiar form of the
// reference without ":latest", so "busybox", "busybox:latest" and
// "docker.io/library/busybox" are one name.
func contextName(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	repo := r.Context().RepositoryStr()
	if reg := r.Context().RegistryStr(); reg != name.DefaultRegistry {
		repo = reg + "/" + repo
	} else if rest, ok := strings.CutPrefix(repo, "library/"); ok && !strings.Contains(rest, "/") {
		repo = rest
	}
	switch r := r.(type) {
	case name.Tag:
		if r.TagStr() != "latest" {
			repo += ":" + r.TagStr()
		}
	case name.Digest:
		repo += "@" + r.DigestStr()
	}
	return repo, nil
}

// namedContext returns the context that replaces ref (a stage name or an
// image reference), or nil.
func (p *planner) namedContext(ref string) *NamedContext {
	if ref == "" || len(p.opts.Contexts) == 0 {
		return nil
	}
	n, err := contextName(ref)
	if err != nil {
		return nil
	}
	for i := range p.opts.Contexts {
		if p.opts.Contexts[i].Name == n {
			return &p.opts.Contexts[i]
		}
	}
	return nil
}

// overrideStage replaces stage si by the context of its name, if any, as
// buildkit does: none of its instructions run; an image context becomes
// its base image, a directory its files (with no image config).
func (p *planner) overrideStage(si *stageInfo) bool {
	nc := p.namedContext(si.src.Name)
	if nc == nil {
		return false
	}
	src := *si.src
	src.Commands = nil
	si.src = &src
	si.st.Replaced = true
	si.st.Platform = p.target
	switch {
	case nc.Image == emptyImage:
		si.baseName, si.st.Base.Scratch = emptyImage, true
	case nc.Image != "":
		si.baseName, si.st.ImageContext = nc.Image, nc
	default:
		si.st.Base.Context = nc
	}
	return true
}

// emptyImage is the image name docker-image:// takes for no image.
const emptyImage = "scratch"

// contextBase makes a FROM whose (expanded) base name is a named context
// start from that context: its image, or a directory's files on the empty
// image. It reports whether it did. A directory that replaced an earlier
// stage of that name is left to the stage (which has its files and, as in
// BuildKit, no image config).
func (p *planner) contextBase(si *stageInfo) bool {
	nc := p.namedContext(si.baseName)
	if nc == nil || nc.Image == "" && p.stageByName(si.baseName, si.st.Index) >= 0 {
		return false
	}
	si.st.FromContext = true
	if nc.Image == "" {
		si.st.Base.Context = nc
		return true
	}
	si.baseName = nc.Image
	si.st.Base.Scratch = nc.Image == emptyImage
	if !si.st.Base.Scratch {
		si.st.ImageContext = nc
	}
	return true
}

// contextRef resolves a COPY --from / RUN --mount from= value of stage i
// that names a context, directly or through the stage it names.
func (p *planner) contextRef(i int, from string, allowIndex bool) (sourceRef, bool) {
	ref := from
	if n, err := strconv.Atoi(from); allowIndex && err == nil {
		if n < 0 || n >= i {
			return sourceRef{}, false
		}
		ref = p.df.Stages[n].Name
	}
	nc := p.namedContext(ref)
	if nc == nil {
		return sourceRef{}, false
	}
	if nc.Image == "" {
		return sourceRef{key: from, stage: -1, dir: nc}, true
	}
	return sourceRef{key: from, stage: -1, image: nc.Image}, true
}
