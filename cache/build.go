package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// BuildRecord is what one build did, kept for `builder history` and to
// explain the next build's cache misses.
type BuildRecord struct {
	ID          string    `json:"id"`
	Project     string    `json:"project"` // identifies Dockerfile path + context + target; the caller computes it
	Target      string    `json:"target,omitempty"`
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished"` // zero while running or after a failure
	ImageDigest string    `json:"imageDigest,omitempty"`
	// Platform is the platform of this record's image in a multi-platform
	// build (one record per platform), and Index the image index's
	// digest, which the tags name.
	Platform string       `json:"platform,omitempty"`
	Index    string       `json:"index,omitempty"`
	Tags     []string     `json:"tags,omitempty"`
	Steps    []StepRecord `json:"steps,omitempty"`
	// History maps each entry of the image config's history to the index in
	// Steps of the step that made it, -1 for entries of the base image.
	History []int `json:"history,omitempty"`

	// Status is "completed", "failed" or "canceled" ("" in records of
	// older builders), and Error the failure as printed.
	Status string `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
	// Request is what was asked for: enough to run the build again.
	Request *BuildRequest `json:"request,omitempty"`
	// Outputs are where the image went, with the digest each holds.
	Outputs []BuildOutput `json:"outputs,omitempty"`
	// Caches is the use of each --cache-from and --cache-to ref.
	Caches []CacheUse `json:"caches,omitempty"`
}

// Build statuses.
const (
	BuildCompleted = "completed"
	BuildFailed    = "failed"
	BuildCanceled  = "canceled"
)

// BuildRequest is what a build was asked to do, recorded so that it can
// be run again (`builder verify`). Secret values are never part of it:
// Secrets holds the --secret specs (id and source only).
type BuildRequest struct {
	ContextDir string `json:"contextDir"`
	// Dockerfile is the Dockerfile's absolute path, "-" when it was read
	// from stdin; DockerfileText its content and DockerfileDigest the
	// sha256 of that text.
	Dockerfile       string `json:"dockerfile"`
	DockerfileText   string `json:"dockerfileText,omitempty"`
	DockerfileDigest string `json:"dockerfileDigest,omitempty"`
	// GitCommit is the commit checked out in the context's repository
	// when the context is in one ("" otherwise).
	GitCommit     string   `json:"gitCommit,omitempty"`
	Target        string   `json:"target,omitempty"`
	Platforms     []string `json:"platforms,omitempty"`
	BuildArgs     []string `json:"buildArgs,omitempty"` // K=V, values as the build saw them
	Labels        []string `json:"labels,omitempty"`
	Secrets       []string `json:"secrets,omitempty"`
	BuildContexts []string `json:"buildContexts,omitempty"`
	Network       string   `json:"network,omitempty"`
	Allow         []string `json:"allow,omitempty"`
	// SourceDateEpoch is the SOURCE_DATE_EPOCH of the build, if any.
	SourceDateEpoch *int64 `json:"sourceDateEpoch,omitempty"`
	// BaseImages are the images the build read, with their digests.
	BaseImages []ImageRef `json:"baseImages,omitempty"`
}

// ImageRef is an image reference as the Dockerfile named it and the
// manifest digest it resolved to.
type ImageRef struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
}

// BuildOutput is one place the image was written: "image" (the local
// store, Name its tags), "docker", "oci", "local" (Dest) or "registry"
// (Name), with the digest of what was written where one is known.
type BuildOutput struct {
	Type   string `json:"type"`
	Name   string `json:"name,omitempty"`
	Dest   string `json:"dest,omitempty"`
	Digest string `json:"digest,omitempty"`
	// LayersPushed and LayersSkipped count the layers a push uploaded
	// and those the registry already had (registry outputs).
	LayersPushed  int `json:"layersPushed,omitempty"`
	LayersSkipped int `json:"layersSkipped,omitempty"`
}

// CacheUse is what one --cache-from ("import") or --cache-to ("export")
// ref cost and gave.
type CacheUse struct {
	Ref       string `json:"ref"`
	Direction string `json:"direction"` // "import" or "export"
	// Records is how many cache records the ref held (import) or was
	// given (export); Steps, on import, how many steps it supplied.
	Records int `json:"records"`
	Steps   int `json:"steps,omitempty"`
	// Layers is how many layers were transferred, LayersSkipped how many
	// the other side already had.
	Layers        int   `json:"layers"`
	LayersSkipped int   `json:"layersSkipped,omitempty"`
	Bytes         int64 `json:"bytes"`
	DurationMS    int64 `json:"durationMS"`
	// Warning says why the ref gave nothing (not found, unreachable,
	// unauthorized, empty).
	Warning string `json:"warning,omitempty"`
}

// StepRecord is one step of a build. When InputsDigest is set (the
// Record of Key stored the inputs as that blob), PutBuild stores only the
// digest, and GetBuild, LatestBuild and BuildForImage load Inputs back from
// the blob (leaving them nil if it is gone).
type StepRecord struct {
	Stage       string `json:"stage"`
	Line        int    `json:"line"`
	Instruction string `json:"instruction"`
	// Name is the step as progress shows it, BuildKit's vertex name
	// ("[base 2/3] RUN make").
	Name   string  `json:"name,omitempty"`
	Key    Key     `json:"key"`
	Inputs *Inputs `json:"inputs,omitempty"`
	// ContentKey is the key of the step by the files it read from another
	// stage (Record.ContentKey), when it had to read them.
	ContentKey   Key    `json:"contentKey,omitzero"`
	InputsDigest string `json:"inputsDigest,omitempty"`
	// Cache is "hit" or "miss", or "none" for a step that only changes
	// the image config (ENV, LABEL...): there is nothing to reuse.
	Cache      string `json:"cache"`
	Reason     string `json:"reason,omitempty"`
	DurationMS int64  `json:"durationMS"`
	Layer      string `json:"layer,omitempty"` // diffID
	Size       int64  `json:"size,omitempty"`  // the layer's uncompressed bytes
	// SavedMS is, for a hit, how long the step took when it ran (the
	// cache record's RunMS; 0 when unknown).
	SavedMS int64 `json:"savedMS,omitempty"`
}

// validBuildID accepts non-empty IDs made of letters, digits, '.', '_' and
// '-', not starting with '.', so an ID is always one plain file name.
func validBuildID(id string) error {
	if id == "" || len(id) > 128 || id[0] == '.' {
		return fmt.Errorf("cache: invalid build id %q", id)
	}
	for _, c := range id {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("._-", c)
		if !ok {
			return fmt.Errorf("cache: invalid build id %q", id)
		}
	}
	return nil
}

// PutBuild stores (or replaces) builds/<ID>.json atomically. Records are
// compact JSON and not fsynced: losing the newest record to a power cut
// only costs the next build its explanations.
func (s *Store) PutBuild(ctx context.Context, b *BuildRecord) error {
	if b == nil {
		return errors.New("put build: nil record")
	}
	if err := validBuildID(b.ID); err != nil {
		return fmt.Errorf("put build: %w", err)
	}
	stored := *b
	stored.Steps = slices.Clone(b.Steps)
	for i := range stored.Steps {
		if stored.Steps[i].InputsDigest != "" {
			stored.Steps[i].Inputs = nil
		}
	}
	data, err := json.Marshal(&stored)
	if err != nil {
		return fmt.Errorf("put build %s: %w", b.ID, err)
	}
	if err := s.writeFile(ctx, s.builds, b.ID+".json", seal(data), bestEffort); err != nil {
		return fmt.Errorf("put build %s: %w", b.ID, err)
	}
	if b.Finished.IsZero() {
		return nil
	}
	if err := s.pointBuild(ctx, projectRef(b.Project), b); err != nil {
		return fmt.Errorf("put build %s: %w", b.ID, err)
	}
	if b.ImageDigest != "" {
		if err := s.pointBuild(ctx, imageRef(b.ImageDigest), b); err != nil {
			return fmt.Errorf("put build %s: %w", b.ID, err)
		}
	}
	return nil
}

// A build pointer, builds/<kind>-<hash>.ref, names the newest finished
// build of a project or of an image, so LatestBuild and BuildForImage read
// one record instead of decoding every record (each can be megabytes: it
// lists every file a COPY selected). Pointers are hints: one that is
// missing, stale or dangling falls back to a scan.
type buildPointer struct {
	ID       string    `json:"id"`
	Finished time.Time `json:"finished"`
}

func projectRef(project string) string { return refName("project", project) }
func imageRef(digest string) string    { return refName("image", digest) }

func refName(kind, name string) string {
	sum := sha256.Sum256([]byte(name))
	return kind + "-" + hex.EncodeToString(sum[:16]) + ".ref"
}

// pointBuild points ref at b unless it points at a build that finished
// later.
func (s *Store) pointBuild(ctx context.Context, ref string, b *BuildRecord) error {
	if cur, ok := s.readPointer(ref); ok && cur.Finished.After(b.Finished) {
		return nil
	}
	data, err := json.Marshal(buildPointer{ID: b.ID, Finished: b.Finished})
	if err != nil {
		return err
	}
	return s.writeFile(ctx, s.builds, ref, data, bestEffort)
}

func (s *Store) readPointer(ref string) (buildPointer, bool) {
	var p buildPointer
	data, err := os.ReadFile(filepath.Join(s.builds, ref))
	if err != nil || json.Unmarshal(data, &p) != nil || validBuildID(p.ID) != nil {
		return buildPointer{}, false
	}
	return p, true
}

// pointed returns the build ref points at if it still matches keep; a
// dangling pointer is removed.
func (s *Store) pointed(ref string, keep func(*BuildRecord) bool) (*BuildRecord, bool) {
	p, ok := s.readPointer(ref)
	if !ok {
		return nil, false
	}
	b, err := readBuild(filepath.Join(s.builds, p.ID+".json"))
	if errors.Is(err, os.ErrNotExist) {
		os.Remove(filepath.Join(s.builds, ref))
	}
	if err != nil || b.Finished.IsZero() || !keep(b) {
		return nil, false
	}
	return b, true
}

// GetBuild returns the build with the given ID, or ErrNotFound.
func (s *Store) GetBuild(ctx context.Context, id string) (*BuildRecord, error) {
	if err := validBuildID(id); err != nil {
		return nil, fmt.Errorf("get build: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := readBuild(filepath.Join(s.builds, id+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("get build %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get build %s: %w", id, err)
	}
	s.loadInputs(ctx, b)
	return b, nil
}

// loadInputs fills in the Inputs of b's steps that name a blob. A missing
// or corrupt blob leaves them nil: they only explain misses.
func (s *Store) loadInputs(ctx context.Context, b *BuildRecord) {
	loaded := map[string]*Inputs{}
	for i := range b.Steps {
		st := &b.Steps[i]
		if st.Inputs != nil || st.InputsDigest == "" {
			continue
		}
		in, ok := loaded[st.InputsDigest]
		if !ok {
			in, _ = s.ReadInputs(ctx, st.InputsDigest)
			loaded[st.InputsDigest] = in
		}
		st.Inputs = in
	}
}

// LatestBuild returns the finished build of project that finished last, or
// ErrNotFound.
func (s *Store) LatestBuild(ctx context.Context, project string) (*BuildRecord, error) {
	keep := func(b *BuildRecord) bool { return b.Project == project }
	b, ok := s.pointed(projectRef(project), keep)
	if !ok {
		var err error
		if b, err = s.newestBuild(ctx, keep); err != nil {
			return nil, fmt.Errorf("latest build of %q: %w", project, err)
		}
	}
	s.loadInputs(ctx, b)
	return b, nil
}

// BuildForImage returns the newest finished build that produced imageDigest,
// or ErrNotFound.
func (s *Store) BuildForImage(ctx context.Context, imageDigest string) (*BuildRecord, error) {
	keep := func(b *BuildRecord) bool { return b.ImageDigest == imageDigest }
	b, ok := s.pointed(imageRef(imageDigest), keep)
	if !ok {
		var err error
		if b, err = s.newestBuild(ctx, keep); err != nil {
			return nil, fmt.Errorf("build for image %s: %w", imageDigest, err)
		}
	}
	s.loadInputs(ctx, b)
	return b, nil
}

// BuiltHere reports whether a finished build record says imageDigest was
// built in this store. Unlike BuildForImage it changes nothing (a
// dangling pointer stays), for checks that must not.
func (s *Store) BuiltHere(ctx context.Context, imageDigest string) bool {
	if p, ok := s.readPointer(imageRef(imageDigest)); ok {
		if b, err := readBuild(filepath.Join(s.builds, p.ID+".json")); err == nil && b.ImageDigest == imageDigest && !b.Finished.IsZero() {
			return true
		}
	}
	_, err := s.newestBuild(ctx, func(b *BuildRecord) bool { return b.ImageDigest == imageDigest })
	return err == nil
}

// newestBuild scans builds/ for the finished record matching keep with the
// latest Finished time. Unreadable records are skipped: they cannot be the
// answer, and one bad file must not hide every other build.
func (s *Store) newestBuild(ctx context.Context, keep func(*BuildRecord) bool) (*BuildRecord, error) {
	var best *BuildRecord
	err := s.eachBuild(ctx, func(_ string, b *BuildRecord) error {
		if !b.Finished.IsZero() && keep(b) && (best == nil || b.Finished.After(best.Finished)) {
			best = b
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if best == nil {
		return nil, ErrNotFound
	}
	return best, nil
}

// eachBuild calls fn for every decodable build record.
func (s *Store) eachBuild(ctx context.Context, fn func(path string, b *BuildRecord) error) error {
	return s.eachBuildFile(ctx, ".json", func(name string) error {
		p := filepath.Join(s.builds, name)
		b, err := readBuild(p)
		if err != nil {
			return nil
		}
		return fn(p, b)
	})
}

// eachBuildFile calls fn with the name of every file of the builds
// directory that ends in suffix.
func (s *Store) eachBuildFile(ctx context.Context, suffix string, fn func(name string) error) error {
	entries, err := os.ReadDir(s.builds)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !strings.HasSuffix(e.Name(), suffix) {
			continue
		}
		if err := fn(e.Name()); err != nil {
			return err
		}
	}
	return nil
}

func readBuild(p string) (*BuildRecord, error) {
	b, err := decodeBuild(p)
	if errors.Is(err, errDamaged) {
		return nil, fmt.Errorf("decode %s: %w: %w", p, ErrCorrupt, err)
	}
	return b, err
}

// decodeBuild decodes a build record file; a damaged one gives an error
// wrapping errDamaged.
func decodeBuild(p string) (*BuildRecord, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	b := new(BuildRecord)
	body, err := unseal(data)
	if err == nil {
		err = json.Unmarshal(body, b)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errDamaged, err)
	}
	return b, nil
}
