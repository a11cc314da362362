package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/planner"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// runMount is one RUN --mount, validated and normalized with BuildKit's
// defaults. The exported fields are its spec, part of the step's cache key
// (never a secret's value, nor a cache mount's content).
type runMount struct {
	Type     instructions.MountType `json:"type"`
	Target   string                 `json:"target,omitempty"` // absolute and clean
	Source   string                 `json:"source,omitempty"` // absolute and clean inside its root
	From     string                 `json:"from,omitempty"`
	FromKey  string                 `json:"fromKey,omitempty"` // key of the from stage, digest of the image
	ReadOnly bool                   `json:"readonly,omitempty"`
	ID       string                 `json:"id,omitempty"` // cache or secret id
	Sharing  string                 `json:"sharing,omitempty"`
	Mode     *uint64                `json:"mode,omitempty"`
	UID      *uint64                `json:"uid,omitempty"`
	GID      *uint64                `json:"gid,omitempty"`
	Size     int64                  `json:"size,omitempty"`
	Required bool                   `json:"required,omitempty"`
	Env      string                 `json:"env,omitempty"` // secret as this env var

	// srcRoot is the mounted root of From (a stage or image view) while the
	// step runs; empty for the build context.
	srcRoot string
	// srcCtx is From when it names a directory context (--build-context).
	srcCtx *buildcontext.Context
	// plan is a bind mount's source, selected and hashed.
	plan *copyPlan
	// deferred: From is a stage, an image or scratch (source), built,
	// mounted and read only when the step runs (withMountSources).
	deferred bool
	source   *planner.Source
}

// parseRunMounts validates a RUN's mounts and fills in BuildKit's
// defaults; relative targets are relative to the workdir wd.
func parseRunMounts(ms []*instructions.Mount, wd string) ([]*runMount, error) {
	out := make([]*runMount, 0, len(ms))
	nssh := 0
	for _, m := range ms {
		rm, err := parseRunMount(m, wd, nssh)
		if err != nil {
			return nil, fmt.Errorf("RUN --mount=type=%s: %w", m.Type, err)
		}
		if rm.Type == instructions.MountTypeSSH {
			nssh++
		}
		out = append(out, rm)
	}
	return out, nil
}

// parseRunMount validates one mount; nssh is the number of ssh mounts
// before it in the RUN.
func parseRunMount(m *instructions.Mount, wd string, nssh int) (*runMount, error) {
	rm := &runMount{Type: m.Type, From: m.From, ReadOnly: m.ReadOnly,
		Mode: m.Mode, UID: m.UID, GID: m.GID}
	switch m.Type {
	case instructions.MountTypeSecret:
		return rm, rm.parseSecret(m)
	case instructions.MountTypeSSH:
		return rm, rm.parseSSH(m, nssh)
	case instructions.MountTypeBind, instructions.MountTypeCache, instructions.MountTypeTmpfs:
	default:
		return nil, fmt.Errorf("unsupported mount type %q (want bind, cache, tmpfs, secret or ssh)", m.Type)
	}
	if m.Target == "" {
		return nil, errors.New("target is required")
	}
	rm.Target = path.Join("/", wd, m.Target)
	if path.IsAbs(m.Target) {
		rm.Target = path.Clean(m.Target)
	}
	if rm.Target == "/" {
		return nil, fmt.Errorf("invalid mount target %q", m.Target)
	}
	// A rooted join: "../../x" cannot climb above the source's root.
	rm.Source = path.Join("/", m.Source)
	switch m.Type {
	case instructions.MountTypeTmpfs:
		if m.Source != "" || m.From != "" {
			return nil, errors.New("tmpfs mounts take no source or from")
		}
		rm.Source, rm.Size = "", m.SizeLimit
	case instructions.MountTypeCache:
		rm.ID = m.CacheID
		if rm.ID == "" {
			rm.ID = path.Clean(m.Target)
		}
		rm.Sharing = string(m.CacheSharing)
		if rm.Sharing == "" {
			rm.Sharing = string(instructions.MountSharingShared)
		}
	case instructions.MountTypeBind:
		if m.CacheID != "" {
			return nil, errors.New("id is only for cache and secret mounts")
		}
	}
	return rm, nil
}

// parseSecret applies BuildKit's secret rules (convert_secrets.go): the
// id defaults to the source, then the target's base name; the file goes
// to /run/secrets/<id> unless only env= is asked for; mode 0400.
func (rm *runMount) parseSecret(m *instructions.Mount) error {
	rm.ID = m.CacheID
	if m.Source != "" {
		rm.ID = m.Source
	}
	if rm.ID == "" {
		if m.Target == "" {
			return errors.New("one of id, source or target is required")
		}
		rm.ID = path.Base(m.Target)
	}
	if m.Target != "" {
		rm.Target = path.Join("/", m.Target)
	}
	if m.Env != nil {
		rm.Env = *m.Env
		if rm.Env == "" {
			rm.Env = rm.ID
		}
		if strings.ContainsAny(rm.Env, "=\x00") {
			return fmt.Errorf("invalid env name %q", rm.Env)
		}
	} else if rm.Target == "" {
		rm.Target = "/run/secrets/" + path.Base(rm.ID)
	}
	if rm.Target == "/" {
		return fmt.Errorf("invalid mount target %q", m.Target)
	}
	rm.Required, rm.ReadOnly = m.Required, true
	if rm.Mode == nil {
		mode := uint64(0o400)
		rm.Mode = &mode
	}
	return nil
}

// sshDefaultID is the --ssh id of an ssh mount without id=.
const sshDefaultID = "default"

// sshSocketDir is where BuildKit puts the agent socket of an ssh mount
// without target: ssh_agent.N, N counting the RUN's ssh mounts from 0.
const sshSocketDir = "/run/buildkit"

// parseSSH applies BuildKit's ssh mount rules (convert_ssh.go, llb's
// AddSSHSocket): no source; the id is kept as written ("" is the
// default agent); the socket is mode 0600 owned by root unless mode,
// uid or gid say otherwise.
func (rm *runMount) parseSSH(m *instructions.Mount, n int) error {
	if m.Source != "" {
		return errors.New("ssh does not support source")
	}
	rm.ID, rm.Required, rm.ReadOnly, rm.From = m.CacheID, m.Required, false, ""
	rm.Target = path.Join(sshSocketDir, fmt.Sprintf("ssh_agent.%d", n))
	if m.Target != "" {
		rm.Target = path.Join("/", m.Target)
	}
	if rm.Target == "/" {
		return fmt.Errorf("invalid mount target %q", m.Target)
	}
	if rm.Mode == nil {
		mode := uint64(0o600)
		rm.Mode = &mode
	}
	return nil
}

// sshID is the --ssh id an ssh mount uses.
func (rm *runMount) sshID() string {
	if rm.ID == "" {
		return sshDefaultID
	}
	return rm.ID
}

// sshAuthSock is BuildKit's SSH_AUTH_SOCK of a RUN with ssh mounts: the
// socket of the first one (used only where the environment has none).
func sshAuthSock(ms []*runMount) (string, bool) {
	for _, rm := range ms {
		if rm.Type == instructions.MountTypeSSH {
			return rm.Target, true
		}
	}
	return "", false
}

// needsFrom reports whether the mount reads from a stage or an image.
func (rm *runMount) needsFrom() bool {
	return rm.From != "" && (rm.Type == instructions.MountTypeBind || rm.Type == instructions.MountTypeCache)
}

// keyField is the mount's spec as a cache key field. A bind mount is
// keyed by the content it binds (keyInputs), not by the key of the stage
// or image it binds from, as BuildKit's content-based mount keys: a
// rebuilt stage with the same files leaves the RUN cached.
func (rm *runMount) keyField() cache.Field {
	spec := *rm
	if spec.Type == instructions.MountTypeBind {
		spec.FromKey = ""
	}
	b, _ := json.Marshal(&spec) // plain strings, numbers and bools: cannot fail
	return cache.Field{Name: "mount", Value: string(b)}
}

// keyInputs lists a bind mount's source for the cache key: every file's
// path, type, mode and content, and the owners and xattrs the RUN sees.
// Names and paths carry the mount's index (i/…) as COPY paths carry the
// source's.
func (rm *runMount) keyInputs(i int) ([]cache.Field, []cache.FileInput) {
	if rm.plan == nil {
		return nil, nil
	}
	var fields []cache.Field
	for _, f := range rm.plan.Fields() {
		if name, ok := strings.CutPrefix(f.Name, "source.0."); ok {
			fields = append(fields, cache.Field{Name: fmt.Sprintf("mount.%d.%s", i, name), Value: f.Value})
		}
	}
	files := rm.plan.Inputs()
	prefix := fmt.Sprintf("%d/", i)
	for j := range files {
		files[j].Path = prefix + strings.TrimPrefix(files[j].Path, "0/")
		if files[j].Type == copyKindNames[copyHardlink] {
			files[j].Link = prefix + strings.TrimPrefix(files[j].Link, "0/")
		}
	}
	return fields, files
}

// keyMountSources prepares the sources of a RUN's mounts for its key
// (the keys pass): a from= directory context is opened and a bind
// mount's source in it or in the build context selected and hashed; a
// from= stage, image or scratch is named by its identity (FromKey) and
// read only when the step runs (withMountSources).
func (b *build) keyMountSources(ctx context.Context, step *planner.Step, ms []*runMount) error {
	for _, rm := range ms {
		if !rm.needsFrom() {
			continue
		}
		from, ok := step.MountFrom[rm.From]
		if !ok {
			return fmt.Errorf("RUN --mount from=%s: no such stage or image", rm.From)
		}
		if readsLayers(&from) {
			id, err := b.sourceID(ctx, &from)
			if err != nil {
				return fmt.Errorf("RUN --mount from=%s: %w", rm.From, err)
			}
			rm.FromKey, rm.deferred, rm.source = id, true, &from
			continue
		}
		src, err := b.resolveSource(ctx, &from)
		if err != nil {
			return fmt.Errorf("RUN --mount from=%s: %w", rm.From, err)
		}
		rm.srcCtx, rm.srcRoot, rm.FromKey = src.dir, src.dir.Root(), src.key
	}
	for _, rm := range ms {
		if rm.Type != instructions.MountTypeBind || rm.deferred {
			continue
		}
		p, err := b.bindPlan(ctx, rm)
		if err != nil {
			for _, o := range ms {
				if o.plan != nil {
					o.plan.Close()
				}
			}
			return err
		}
		rm.plan = p
	}
	return nil
}

// withMountSources builds and mounts a view of every from= stage, image
// or scratch the mounts read, selects and hashes the bind mounts'
// sources in them, and calls fn while they are available (the build
// pass, on a miss).
func (b *build) withMountSources(ctx context.Context, ms []*runMount, fn func() error) error {
	for i, rm := range ms {
		if !rm.deferred || rm.srcRoot != "" {
			continue
		}
		src, err := b.resolveSource(ctx, rm.source)
		if err != nil {
			return fmt.Errorf("RUN --mount from=%s: %w", rm.From, err)
		}
		// Every mount reading the same from= shares one view.
		return b.withSource(ctx, src, func(_ *buildcontext.Context, root string) error {
			var same []*runMount
			for _, other := range ms[i:] {
				if other.deferred && other.From == rm.From {
					other.srcRoot = root
					same = append(same, other)
				}
			}
			defer func() {
				for _, o := range same {
					o.srcRoot = ""
				}
			}()
			return b.withMountSources(ctx, ms, fn)
		})
	}
	var plans []*runMount
	defer func() {
		for _, rm := range plans {
			rm.plan.Close()
			rm.plan = nil
		}
	}()
	for _, rm := range ms {
		if rm.Type != instructions.MountTypeBind || !rm.deferred {
			continue
		}
		p, err := b.bindPlan(ctx, rm)
		if err != nil {
			return err
		}
		rm.plan = p
		plans = append(plans, rm)
	}
	return fn()
}

// bindPlan selects and hashes a bind mount's source: COPY's selection,
// so the build context's .dockerignore applies and symlinks resolve
// inside the source's root.
func (b *build) bindPlan(ctx context.Context, rm *runMount) (*copyPlan, error) {
	req := copyRequest{
		Sources: []string{buildcontext.Clean(rm.Source)},
		Dest:    "/m",
		TempDir: b.e.opts.TempDir,
	}
	switch {
	case rm.srcCtx != nil:
		b.readFrom(&req, rm.srcCtx, "")
	case rm.From != "":
		b.readFrom(&req, nil, rm.srcRoot)
	case b.e.opts.Context == nil:
		return nil, errors.New("RUN --mount=type=bind: no build context to bind from")
	default:
		b.readFrom(&req, b.e.opts.Context, "")
	}
	p, err := copyPrepare(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("RUN --mount=type=bind,source=%s: %w", rm.Source, err)
	}
	return p, nil
}

// stepMounts are the sandbox mounts of one RUN execution and what to
// release after it.
type stepMounts struct {
	binds   []sandbox.Bind
	tmpfs   []sandbox.Tmpfs
	files   []sandbox.File
	env     []string
	cleanup []func() error
}

func (sm *stepMounts) close() error {
	var errs []error
	for i := len(sm.cleanup) - 1; i >= 0; i-- {
		errs = append(errs, sm.cleanup[i]())
	}
	sm.cleanup = nil
	return errors.Join(errs...)
}

// prepareMounts makes the host side of every mount: a private copy of each
// bind source (so it is pinned, and writes to rw binds are discarded), the
// locked cache directories, and the secrets.
func (b *build) prepareMounts(ctx context.Context, ms []*runMount) (_ *stepMounts, err error) {
	sm := &stepMounts{}
	defer func() {
		if err != nil {
			sm.close()
		}
	}()
	for _, rm := range ms {
		switch rm.Type {
		case instructions.MountTypeBind:
			err = b.prepareBind(ctx, rm, sm)
		case instructions.MountTypeCache:
			err = b.prepareCache(ctx, rm, sm)
		case instructions.MountTypeTmpfs:
			sm.tmpfs = append(sm.tmpfs, sandbox.Tmpfs{Target: rm.Target, Size: rm.Size, ReadOnly: rm.ReadOnly})
		case instructions.MountTypeSecret:
			err = b.prepareSecret(rm, sm)
		case instructions.MountTypeSSH:
			err = b.prepareSSH(ctx, rm, sm)
		}
		if err != nil {
			return nil, err
		}
	}
	return sm, nil
}

func (b *build) prepareBind(ctx context.Context, rm *runMount, sm *stepMounts) error {
	dir, err := os.MkdirTemp(b.e.opts.TempDir, "bind-")
	if err != nil {
		return err
	}
	sm.cleanup = append(sm.cleanup, func() error { return os.RemoveAll(dir) })
	if err := rm.plan.Apply(ctx, dir); err != nil {
		return fmt.Errorf("RUN --mount=type=bind,source=%s: %w", rm.Source, err)
	}
	m := filepath.Join(dir, "m")
	if top, ok := rm.plan.sourceDir(); ok {
		// The copy made m as a destination (0755, root's); BuildKit binds
		// the source directory itself, with its mode, owner and times.
		own := copyOwner{}
		if rm.plan.keepsOwners() {
			own = copyOwner{uid: top.uid, gid: top.gid}
		}
		if err := copyFinish(m, rm.Source, top, top.mode, own); err != nil {
			return fmt.Errorf("RUN --mount=type=bind,source=%s: %w", rm.Source, err)
		}
	}
	sm.binds = append(sm.binds, sandbox.Bind{Source: m, Target: rm.Target, ReadOnly: rm.ReadOnly})
	return nil
}

// sourceDir is the directory a plan of one directory source copies the
// contents of.
func (p *copyPlan) sourceDir() (copyEntry, bool) {
	if len(p.sources) != 1 || len(p.sources[0].entries) == 0 || p.sources[0].entries[0].kind != copyDir {
		return copyEntry{}, false
	}
	return p.sources[0].entries[0], true
}

func (b *build) prepareSecret(rm *runMount, sm *stepMounts) error {
	data, ok := b.e.opts.Secrets[rm.ID]
	if !ok {
		if rm.Required {
			return fmt.Errorf("secret %s: not found (it is required: builder build --secret id=%s,src=PATH)", rm.ID, rm.ID)
		}
		return nil
	}
	if rm.Env != "" {
		sm.env = append(sm.env, rm.Env+"="+string(data))
	}
	if rm.Target != "" {
		sm.files = append(sm.files, sandbox.File{Target: rm.Target, Data: data,
			Mode: uint32(*rm.Mode), UID: uint32(deref(rm.UID)), GID: uint32(deref(rm.GID))})
	}
	return nil
}

func deref(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}
