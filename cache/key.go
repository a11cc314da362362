package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
	"strings"
)

// keyVersion tags the encoding; bump it whenever the encoding or the meaning
// of any input changes so that old entries can never be confused with new ones.
// v2: COPY/ADD make the directories of their destination 0755 (or with an
// octal --chmod) where v1 gave a copied tree's top the source's mode, and
// RUN bind mounts are keyed by the content they bind; COPY/ADD key their
// destination once, resolved against the workdir and cleaned (v1 had it
// twice, by two rules). v2 has not shipped: changes before it does stay v2.
// A step reading another stage (COPY --from, RUN --mount from=) has an
// input key (fields "from", "mount.N.from": the source's key or digest)
// and a content key (the files it reads), which new field names keep
// apart from any earlier key.
const keyVersion = "builder.cachekey.v2"

// Key identifies the result of one build step. It is a sha256 over a
// canonical, length-prefixed encoding of the parent key and the step's
// Inputs. The zero Key is the parent of a stage root.
type Key [sha256.Size]byte

// String returns "sha256:<hex>".
func (k Key) String() string { return "sha256:" + hex.EncodeToString(k[:]) }

// Hex returns the hex digest without the algorithm prefix.
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }

// IsZero reports whether k is the zero key.
func (k Key) IsZero() bool { return k == Key{} }

// MarshalText implements encoding.TextMarshaler.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *Key) UnmarshalText(b []byte) error {
	p, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// ParseKey parses "sha256:<hex>".
func ParseKey(s string) (Key, error) {
	var k Key
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 2*sha256.Size {
		return k, fmt.Errorf("cache: invalid key %q", s)
	}
	if _, err := hex.Decode(k[:], []byte(h)); err != nil {
		return k, fmt.Errorf("cache: invalid key %q: %w", s, err)
	}
	return k, nil
}

// Field is one named input of a step. Names are stable identifiers such as
// "instruction", "env.PATH", "arg.VERSION", "user", "workdir", "network",
// "base.digest", "platform", "dest", "flag.chown". Values are opaque strings.
type Field struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// FileInput describes one source file selected by a COPY or ADD. Mtime and
// ownership of context files are deliberately absent.
type FileInput struct {
	Path   string `json:"path"`             // slash-separated, relative to the source root
	Type   string `json:"type"`             // "file", "dir", "symlink"
	Mode   uint32 `json:"mode"`             // permission bits plus setuid/setgid/sticky
	Digest string `json:"digest,omitempty"` // "sha256:<hex>" of the content, files only
	Link   string `json:"link,omitempty"`   // symlink target
}

// Inputs is everything that can change a step's result. The executor fills
// it; the cache only encodes and compares it.
type Inputs struct {
	Op     string      `json:"op"` // "FROM", "RUN", "COPY", "ADD", "WORKDIR"
	Fields []Field     `json:"fields,omitempty"`
	Files  []FileInput `json:"files,omitempty"`
}

// KeyOf returns the key of a step with the given parent key and inputs. Field
// order is significant only among fields with the same name; fields are sorted
// by name (stably) and files by path before hashing, so callers need not sort.
func KeyOf(parent Key, in Inputs) Key {
	w := keyWriter{h: sha256.New()}
	w.str(keyVersion)
	w.write(parent[:])
	w.str(in.Op)
	fields := sortedBy(in.Fields, func(f Field) string { return f.Name })
	w.int(len(fields))
	for _, f := range fields {
		w.str(f.Name)
		w.str(f.Value)
	}
	files := sortedBy(in.Files, func(f FileInput) string { return f.Path })
	w.int(len(files))
	for _, f := range files {
		w.str(f.Path)
		w.str(f.Type)
		w.int(int(f.Mode))
		w.str(f.Digest)
		w.str(f.Link)
	}
	var k Key
	w.h.Write(w.buf)
	w.h.Sum(k[:0])
	return k
}

// sortedBy returns s sorted stably by name: s itself when it already is
// (a COPY's files come sorted), else a sorted copy.
func sortedBy[T any](s []T, name func(T) string) []T {
	cmp := func(a, b T) int { return strings.Compare(name(a), name(b)) }
	if slices.IsSortedFunc(s, cmp) {
		return s
	}
	s = slices.Clone(s)
	slices.SortStableFunc(s, cmp)
	return s
}

// keyWriter feeds a key's hash through one buffer: a string handed to the
// hash on its own would be copied into a new byte slice each time.
type keyWriter struct {
	h   hash.Hash
	buf []byte
}

func (w *keyWriter) write(p []byte) {
	w.flush(len(p))
	w.buf = append(w.buf, p...)
}

// str writes s's length, then s.
func (w *keyWriter) str(s string) {
	w.int(len(s))
	w.flush(len(s))
	w.buf = append(w.buf, s...)
}

func (w *keyWriter) int(n int) {
	w.flush(8)
	w.buf = binary.BigEndian.AppendUint64(w.buf, uint64(n))
}

// flush hashes the buffer when n more bytes would overflow it.
func (w *keyWriter) flush(n int) {
	if len(w.buf)+n > 32<<10 && len(w.buf) > 0 {
		w.h.Write(w.buf)
		w.buf = w.buf[:0]
	}
	if w.buf == nil {
		w.buf = make([]byte, 0, 32<<10)
	}
}
