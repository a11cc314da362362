package executor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/buildcontext"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/util/system"
	"github.com/moby/patternmatcher"
)

// copyRequest is one expanded COPY or ADD instruction.
type copyRequest struct {
	Add      bool
	Line     int
	Sources  []string                     // expanded, as written (globs, URLs for ADD)
	Heredocs []instructions.SourceContent // inline files
	Dest     string                       // expanded destination as written
	Workdir  string                       // image WorkingDir for a relative Dest ("" = "/"), with slashes
	// OS is the target's operating system: a Windows Dest may have the
	// drive letter C: and backslashes (BuildKit's pathRelativeToWorkingDir).
	OS         string
	Chown      string
	Chmod      string
	Checksum   string // ADD --checksum
	KeepGitDir bool
	Link       bool // see linkLayer
	// Unpack is ADD --unpack: nil extracts local archives (detected by
	// content) and not downloaded ones; true extracts both; false neither.
	Unpack     *bool
	Parents    bool
	Exclude    []string
	Context    *buildcontext.Context // the build context, or nil with SrcRoot
	SrcRoot    string                // root of a --from stage/image when Context is nil
	Hash       func(ctx context.Context, path string, fi os.FileInfo) (cache.FileSum, error)
	HTTPClient *http.Client
	// URLMemo remembers the validators of URL downloads, so that ADD
	// <url> revalidates with HEAD; nil downloads every time.
	URLMemo addURLMemo
	Git     *gitOptions // how ADD fetches Git sources (add_git.go)
	TempDir string
	// Warn receives non-fatal problems, such as device nodes of an ADD
	// archive that cannot be created in a user namespace; nil drops them.
	Warn func(msg string)
}

// linkLayer reports whether the step's layer is made on an empty root
// and stacked on the image, as BuildKit merges a COPY --link's copy onto
// scratch (when there is no --chmod: then it copies into the image). The
// layer then holds every file copied, also where the image has the same
// file, and the directories of the destination path as the copy made them
// (0755, owned by --chown), which replace what the image has on that path:
// its directories' metadata, and a file or a symlink on the way.
func (req copyRequest) linkLayer() bool { return req.Link && req.Chmod == "" }

// copyKind is what a selected entry is.
type copyKind int

const (
	copyFile copyKind = iota
	copyDir
	copySymlink
	copyHardlink
	copyFifo
	copyDevice
)

var copyKindNames = [...]string{"file", "dir", "symlink", "hardlink", "fifo", "device"}

// copyEntry is one file to write: rel is its path below the source's
// destination ("" for the top-level entry itself).
type copyEntry struct {
	rel    string
	kind   copyKind
	mode   fs.FileMode
	rdev   uint64
	mtime  time.Time
	digest string
	link   string // symlink target, or the rel of the first hardlink
	host   string // host path to read content from
	xattrs map[string][]byte
	// uid and gid are the owner of the source file: kept by a COPY
	// --from a stage or image without --chown, as BuildKit does.
	uid, gid int
	// info is the Lstat of host made when the entry was selected; hashing
	// reuses it instead of a second stat per file.
	info fs.FileInfo
}

// copySource is one selected top-level source with everything below it.
type copySource struct {
	index   int
	written string // the source as written (or the URL / heredoc name)
	name    string // base name used when copying into a directory
	entries []copyEntry
	archive bool   // ADD of a local archive: extract into dest
	data    []byte // heredoc content
	url     *addDownload
	git     *addGit // an ADD of a Git repository (add_git.go)
	// COPY --parents: the source is written at dest/name, where name is
	// its path below pivot, and parents are the directories between
	// pivot and the source (rel relative to dest), outermost first.
	pivot   string
	parents []copyEntry
}

// copyPlan is a COPY/ADD whose sources are selected and hashed; Apply
// writes it into a rootfs. It is not safe for concurrent use.
type copyPlan struct {
	req     copyRequest
	chmod   *copyChmod
	dest    string // absolute, slash-separated, inside the rootfs
	destDir bool   // dest was written as a directory ("/" suffix, ".")
	sources []*copySource
	// pivots are the directories COPY --parents copies from, matches or
	// not: each makes dest.
	pivots []copyPivot
	// upper collects, during ApplyDirect, the writes left for the
	// snapshot's upper directory.
	upper *upperWrites
}

// copyPivot is one pivot directory of the source with that index.
type copyPivot struct {
	index int
	pivot string
}

// copyPrepare validates the flags, selects every source file, and hashes
// them. All source errors happen here, before any write. Globs follow
// BuildKit's AllowEmptyWildcard: a wildcard that matches nothing selects
// nothing and is not an error, alone or beside other sources (buildkit
// testEmptyWildcard); a missing literal path is `"/path": not found`.
func copyPrepare(ctx context.Context, req copyRequest) (_ *copyPlan, err error) {
	p := &copyPlan{req: req}
	if err := p.validate(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	tree, err := p.tree()
	if err != nil {
		return nil, err
	}
	for i, src := range req.Sources {
		if err := p.addSource(ctx, tree, i, src); err != nil {
			return nil, err
		}
	}
	for i, hd := range req.Heredocs {
		p.sources = append(p.sources, copyHeredoc(len(req.Sources)+i, hd))
	}
	if err := p.hashAll(ctx, tree); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *copyPlan) validate() error {
	req := p.req
	op := "COPY"
	if req.Add {
		op = "ADD"
	}
	if len(req.Sources) == 0 && len(req.Heredocs) == 0 {
		return fmt.Errorf("%s requires at least one source", op)
	}
	for _, s := range req.Sources {
		if isGitURL(s) && !req.Add {
			return errors.New("source can't be a git ref for COPY")
		}
		if addIsURL(s) && !req.Add {
			return errors.New("source can't be a URL for COPY")
		}
	}
	if req.Checksum != "" {
		if !req.Add {
			return errors.New("checksum can't be specified for COPY")
		}
		if len(req.Sources) != 1 {
			return errors.New("checksum can't be specified for multiple sources")
		}
		if !addIsURL(req.Sources[0]) && !isGitURL(req.Sources[0]) {
			return errors.New("checksum requires HTTP(S) or Git sources")
		}
		if _, err := addParseChecksum(req.Checksum); err != nil && !isGitURL(req.Sources[0]) {
			return err
		}
	}
	if req.Chmod != "" {
		m, err := copyParseChmod(req.Chmod)
		if err != nil {
			return err
		}
		p.chmod = m
	}
	if _, err := patternmatcher.New(req.Exclude); err != nil {
		return fmt.Errorf("invalid --exclude pattern: %w", err)
	}
	dest := req.Dest
	if req.OS == "windows" {
		d, err := system.CheckSystemDriveAndRemoveDriveLetter(dest, req.OS, true)
		if err != nil {
			return fmt.Errorf("destination %s: %w", dest, err)
		}
		dest = d
	}
	p.dest, p.destDir = copyDest(req.Workdir, dest)
	return nil
}

// copyDest resolves dest against the workdir, and reports whether it is
// written as a directory: with a trailing "/" or "/.", or as "." or ""
// (the working directory, as BuildKit's pathRelativeToWorkingDir has it).
func copyDest(workdir, dest string) (string, bool) {
	isDir := dest == "" || dest == "." || strings.HasSuffix(dest, "/") || strings.HasSuffix(dest, "/.")
	if !path.IsAbs(dest) {
		if workdir == "" {
			workdir = "/"
		}
		dest = path.Join(workdir, dest)
	}
	return path.Clean("/" + dest), isDir
}

// tree returns the source tree of local sources.
func (p *copyPlan) tree() (*buildcontext.Context, error) {
	if p.req.Context != nil {
		return p.req.Context, nil
	}
	if p.req.SrcRoot == "" {
		return nil, nil
	}
	return buildcontext.Open(p.req.SrcRoot, nil)
}

// Close removes temporary downloads; it is safe to call more than once.
func (p *copyPlan) Close() error {
	var errs []error
	for _, s := range p.sources {
		if err := s.git.close(); err != nil {
			errs = append(errs, err)
		}
		if s.url != nil && s.url.file != "" {
			if err := os.Remove(s.url.file); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			s.url.file = ""
		}
	}
	return errors.Join(errs...)
}
