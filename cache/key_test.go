package cache

import (
	"slices"
	"strings"
	"testing"
)

// pinnedInputs is a step's inputs in no particular order, with a value
// longer than KeyOf's buffer.
func pinnedInputs() Inputs {
	return Inputs{
		Op: "COPY",
		Fields: []Field{
			{Name: "source.0", Value: "b"},
			{Name: "dest", Value: "/app/"},
			{Name: "source.0", Value: "a"}, // same name: order kept
			{Name: "flag.chown", Value: "1:2"},
		},
		Files: []FileInput{
			{Path: "0/./src.bak", Type: "file", Mode: 0o644, Digest: "sha256:" + strings.Repeat("ab", 32)},
			{Path: "0/./src", Type: "dir", Mode: 0o755},
			{Path: "0/./src/link", Type: "symlink", Mode: 0o777, Link: strings.Repeat("x/", 20000)},
			{Path: "0/./src/a", Type: "file", Mode: 0o600, Digest: "sha256:" + strings.Repeat("cd", 32)},
		},
	}
}

// TestKeyOfPinned: the key's encoding is the cache's format: a change to
// it must come with a keyVersion bump. The digest was computed by the
// encoding before KeyOf wrote through one buffer.
func TestKeyOfPinned(t *testing.T) {
	var parent Key
	copy(parent[:], "parent key of thirty-two bytes..")
	const want = "sha256:c48639f8aecb9afdaa2352b8447fb1f23b8ef45852c9f0fa62b4daa1fc076800"
	if got := KeyOf(parent, pinnedInputs()).String(); got != want {
		t.Errorf("KeyOf = %s, want %s", got, want)
	}
}

// TestKeyOfOrder: files and fields may come in any order (fields of one
// name keep theirs), and KeyOf leaves the caller's slices as they were.
func TestKeyOfOrder(t *testing.T) {
	var parent Key
	in := pinnedInputs()
	want := KeyOf(parent, in)
	if !slices.Equal(in.Files, pinnedInputs().Files) || !slices.Equal(in.Fields, pinnedInputs().Fields) {
		t.Fatal("KeyOf reordered its input")
	}
	sorted := pinnedInputs()
	slices.SortStableFunc(sorted.Fields, func(a, b Field) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(sorted.Files, func(a, b FileInput) int { return strings.Compare(a.Path, b.Path) })
	if got := KeyOf(parent, sorted); got != want {
		t.Errorf("sorted inputs: key %s, want %s", got, want)
	}
	swapped := pinnedInputs()
	swapped.Fields[0], swapped.Fields[2] = swapped.Fields[2], swapped.Fields[0]
	if got := KeyOf(parent, swapped); got == want {
		t.Error("fields of one name in another order: same key")
	}
}
