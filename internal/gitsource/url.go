// Package gitsource fetches Git repositories the way BuildKit's git source
// does, with the git binary: a URL (with its #ref:subdir fragment or its
// ?ref=&branch=&tag=&commit=&subdir=&keep-git-dir=&submodules= query) is
// parsed into a Ref, the Ref is resolved to a commit with `git ls-remote`
// (the commit is the source's cache key), and the commit is checked out
// into a directory, optionally with its .git directory and submodules.
package gitsource

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Ref is a parsed Git source.
type Ref struct {
	// Remote is the repository URL given to git: no fragment, no query.
	Remote string
	// Scheme is http, https, ssh (scp-like URLs too), git or file.
	Scheme string
	// Host is the remote's host ("" for file://).
	Host string
	// Ref is a branch, a tag, a full ref (refs/...) or a commit; "" is the
	// remote's default branch.
	Ref string
	// Checksum is a commit (or a prefix of one) the ref must resolve to.
	Checksum string
	// SubDir is the directory of the repository to use, clean and
	// relative ("" for the root).
	SubDir string
	// KeepGitDir and Submodules are the query's keep-git-dir= and
	// submodules= (nil when absent).
	KeepGitDir *bool
	Submodules *bool
}

// ErrNotGit is returned by Parse for a string that is no Git URL.
var ErrNotGit = errors.New("not a git URL")

var (
	schemeRE = regexp.MustCompile(`^[a-zA-Z0-9]+://`)
	// scpRE is git's scp-like syntax as BuildKit accepts it:
	// user@host:path[?query][#fragment].
	scpRE = regexp.MustCompile(`^([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):(.*?)(?:\?(.*?))?(?:#(.*))?$`)
)

// IsGit reports whether s is a Git URL in a form Parse accepts.
func IsGit(s string) bool {
	_, err := Parse(s)
	return !errors.Is(err, ErrNotGit)
}

// Parse parses a Git URL in the forms BuildKit's Dockerfile frontend
// takes: git://, ssh:// and scp-like user@host:path URLs, and http(s)://
// URLs whose path ends in ".git"; builder also takes file:// URLs. The
// fragment is REF[:SUBDIR]; the query is BuildKit's (ref, branch, tag,
// commit or checksum, subdir, keep-git-dir, submodules). A string that is
// no Git URL gives an error wrapping ErrNotGit; a Git URL with a bad
// fragment or query gives another error.
func Parse(s string) (*Ref, error) {
	var (
		r        = &Ref{}
		query    url.Values
		fragment string
	)
	if proto := schemeRE.FindString(s); proto != "" {
		scheme := strings.ToLower(strings.TrimSuffix(proto, "://"))
		switch scheme {
		case "http", "https", "ssh", "git", "file":
		default:
			return nil, fmt.Errorf("%w: scheme %s", ErrNotGit, scheme)
		}
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("git URL %q: %w", s, err)
		}
		if (scheme == "http" || scheme == "https") && !strings.HasSuffix(u.Path, ".git") {
			return nil, fmt.Errorf("%w: an http(s) URL is a git repository only when its path ends in .git", ErrNotGit)
		}
		if scheme == "file" && u.Host != "" {
			return nil, fmt.Errorf("git URL %q: a file:// URL has no host", s)
		}
		query, fragment = u.Query(), u.Fragment
		if u.RawQuery == "" {
			query = nil
		}
		bare := *u
		bare.Fragment, bare.RawFragment, bare.RawQuery, bare.ForceQuery = "", "", "", false
		r.Remote, r.Scheme, r.Host = bare.String(), scheme, u.Hostname()
	} else if m := scpRE.FindStringSubmatch(s); m != nil {
		if m[4] != "" {
			q, err := url.ParseQuery(m[4])
			if err != nil {
				return nil, fmt.Errorf("git URL %q: invalid query: %w", s, err)
			}
			query = q
		}
		fragment = m[5]
		r.Remote, r.Scheme, r.Host = m[1]+"@"+m[2]+":"+m[3], "ssh", m[2]
	} else {
		return nil, ErrNotGit
	}
	if strings.HasPrefix(r.Host, "-") {
		return nil, fmt.Errorf("git URL %q: invalid host %q", s, r.Host)
	}
	if fragment != "" {
		ref, sub, _ := strings.Cut(fragment, ":")
		r.Ref, r.SubDir = ref, cleanSubDir(sub)
	}
	if err := r.loadQuery(query); err != nil {
		return nil, err
	}
	if err := validRef(r.Ref); err != nil {
		return nil, err
	}
	return r, nil
}

// cleanSubDir makes a subdirectory relative and clean: "/a/../b/" is "b",
// "../x" is "x"; the root is "".
func cleanSubDir(s string) string {
	return strings.TrimPrefix(path.Join("/", s), "/")
}

// validRef refuses refs git would take for an option.
func validRef(ref string) error {
	if strings.HasPrefix(ref, "-") {
		return fmt.Errorf("invalid git ref %q", ref)
	}
	return nil
}

// loadQuery applies a URL's query as BuildKit's dfgitutil does, with its
// error messages.
func (r *Ref) loadQuery(q url.Values) error {
	var tag, branch string
	for k, v := range q {
		if len(v) > 1 {
			return fmt.Errorf("query %q has multiple values", k)
		}
		val, valueless := "", len(v) == 0 || v[0] == ""
		if !valueless {
			val = v[0]
		}
		switch k {
		case "submodules", "keep-git-dir":
		default:
			if valueless {
				return fmt.Errorf("query %q has no value", k)
			}
		}
		switch k {
		case "ref":
			if r.Ref != "" && r.Ref != val {
				return fmt.Errorf("ref conflicts: %q vs %q", r.Ref, val)
			}
			r.Ref = val
		case "tag":
			tag = val
		case "branch":
			branch = val
		case "subdir":
			sub := cleanSubDir(val)
			if r.SubDir != "" && r.SubDir != sub {
				return fmt.Errorf("subdir conflicts: %q vs %q", r.SubDir, val)
			}
			r.SubDir = sub
		case "checksum", "commit":
			r.Checksum = val
		case "keep-git-dir", "submodules":
			b := true
			if !valueless {
				var err error
				if b, err = strconv.ParseBool(val); err != nil {
					return fmt.Errorf("invalid %s value: %q", k, val)
				}
			}
			if k == "keep-git-dir" {
				r.KeepGitDir = &b
			} else {
				r.Submodules = &b
			}
		default:
			return fmt.Errorf("unexpected query %q", k)
		}
	}
	if tag != "" {
		if !strings.HasPrefix(tag, "refs/tags/") {
			tag = "refs/tags/" + tag
		}
		if r.Ref != "" && r.Ref != tag {
			return fmt.Errorf("ref conflicts: %q vs %q", r.Ref, tag)
		}
		r.Ref = tag
	}
	if branch != "" {
		if tag != "" {
			return errors.New("branch conflicts with tag")
		}
		if !strings.HasPrefix(branch, "refs/heads/") {
			branch = "refs/heads/" + branch
		}
		if r.Ref != "" && r.Ref != branch {
			return fmt.Errorf("ref conflicts: %q vs %q", r.Ref, branch)
		}
		r.Ref = branch
	}
	return nil
}

// String is the source in fragment form, REMOTE[#REF[:SUBDIR]], for
// messages and cache keys.
func (r *Ref) String() string {
	s := r.Remote
	if r.Ref != "" || r.SubDir != "" {
		s += "#" + r.Ref
		if r.SubDir != "" {
			s += ":" + r.SubDir
		}
	}
	return s
}

// IsCommit reports whether s is a full sha1 or sha256 commit id.
func IsCommit(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
