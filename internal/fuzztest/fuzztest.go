// Package fuzztest holds what the fuzz targets of several packages share:
// a fast scratch directory kept for the life of a fuzz worker, per-input
// time and allocation bounds, a listing of a tree to prove nothing outside
// a sandbox changed, and the checked-in seed corpus files
// (testdata/fuzz/<FuzzName>/<seed>, Go's "go test fuzz v1" format).
//
// It is imported by _test.go files only.
package fuzztest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// updateSeeds makes CheckSeeds rewrite the seed corpus instead of checking it.
var updateSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite testdata/fuzz/<FuzzName>/ seed files from their generators")

// shmDir is where ScratchDir puts its directory when it is a tmpfs.
const shmDir = "/dev/shm"

const scratchPrefix = "builder-fuzz-"

// ScratchDir returns a directory for one fuzz worker (one test process),
// removed when the fuzz target returns. It is on a tmpfs (/dev/shm) when
// there is one: creating and removing files there is 10-30 times faster
// than on a journaled disk, and fsync is free, which is most of the cost of
// a filesystem fuzz input. Directories left by killed workers (whose pid is
// gone) are removed first. Without a usable tmpfs it is tb.TempDir().
func ScratchDir(tb testing.TB) string {
	tb.Helper()
	var st unix.Statfs_t
	if unix.Statfs(shmDir, &st) != nil || st.Type != unix.TMPFS_MAGIC || unix.Access(shmDir, unix.W_OK) != nil {
		return tb.TempDir()
	}
	removeStale()
	dir, err := os.MkdirTemp(shmDir, scratchPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return tb.TempDir()
	}
	tb.Cleanup(func() { _ = RemoveAll(dir) })
	return dir
}

// removeStale removes scratch directories of processes that are gone.
func removeStale() {
	entries, err := os.ReadDir(shmDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), scratchPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || unix.Kill(pid, 0) == unix.ESRCH {
			_ = RemoveAll(filepath.Join(shmDir, e.Name()))
		}
	}
}

// RemoveAll removes dir even when extracted content left directories
// without write or search permission (as a non-root user).
func RemoveAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// Bounds are the per-input limits of Run.
type Bounds struct {
	// Timeout is the deadline of the context given to the input; the
	// input must return within Timeout+Grace.
	Timeout, Grace time.Duration
	// MaxAlloc bounds the bytes allocated on the heap while the input
	// runs (all goroutines of the process); 0 means no bound.
	MaxAlloc uint64
}

// Run calls fn with a context that expires after b.Timeout and fails t
// when fn takes longer than b.Timeout+b.Grace or allocates more than
// b.MaxAlloc bytes: the code under test must honour cancellation and must
// not let a small input make it allocate without bound. (The fuzzing
// engine itself kills an input only after 10 s.)
func Run(t *testing.T, b Bounds, fn func(ctx context.Context)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), b.Timeout)
	defer cancel()
	before := allocated()
	start := time.Now()
	fn(ctx)
	if d := time.Since(start); d > b.Timeout+b.Grace {
		t.Fatalf("input took %v, want at most %v (context deadline %v)", d.Round(time.Millisecond), b.Timeout+b.Grace, b.Timeout)
	}
	if a := allocated() - before; b.MaxAlloc > 0 && a > b.MaxAlloc {
		t.Fatalf("input allocated %d MiB, want at most %d MiB", a>>20, b.MaxAlloc>>20)
	}
}

var allocSample = []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}

// allocated is the cumulative heap allocation of the process.
func allocated() uint64 {
	metrics.Read(allocSample)
	if allocSample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return allocSample[0].Value.Uint64()
}

// Listing describes every path below dir (not dir itself) except those
// under skip (paths relative to dir): type, mode, owner, size, mtime, content hash and link
// target, one line each, sorted. Two equal listings mean nothing in the
// tree changed.
func Listing(t testing.TB, dir string, skip ...string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		for _, s := range skip {
			if rel == s {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		out = append(out, describe(t, rel, p))
		return nil
	})
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	sort.Strings(out)
	return out
}

func describe(t testing.TB, rel, p string) string {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	extra := ""
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		extra = hex.EncodeToString(sum[:8])
	case unix.S_IFLNK:
		extra, _ = os.Readlink(p)
	}
	return fmt.Sprintf("%s mode=%o uid=%d gid=%d size=%d mtime=%d.%d %s",
		rel, st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec, extra)
}

// Seed is one checked-in seed input of a fuzz target: Args are the values
// of its parameters after *testing.T, in order ([]byte, string, bool or
// integer types).
type Seed struct {
	Name string // file name: lowercase words joined by '-'
	Args []any
}

// CheckSeeds keeps testdata/fuzz/<fuzzName>/ in step with seeds, the
// output of a package's seed generator: with -update-fuzz-seeds it writes
// every seed file (and removes seed files no longer generated, keeping
// any other file, such as a crasher the fuzzer saved), otherwise it fails
// when a generated seed file is missing. (It does not compare contents: a
// compression library update may change a compressed seed's bytes, which
// makes it no worse a seed.) Regenerate with:
//
//	go test ./PKG -run TestFuzzSeeds -update-fuzz-seeds
func CheckSeeds(t *testing.T, fuzzName string, seeds []Seed) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", fuzzName)
	names := map[string]bool{}
	for _, s := range seeds {
		if names[s.Name] {
			t.Fatalf("%s: duplicate seed name %q", fuzzName, s.Name)
		}
		names[s.Name] = true
		data := Marshal(s.Args...)
		p := filepath.Join(dir, s.Name)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("seed %s: %v; run go test -run TestFuzzSeeds -update-fuzz-seeds in this package", p, err)
		}
	}
	if !*updateSeeds {
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !names[e.Name()] && isSeedName(e.Name()) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// isSeedName tells generated seed names (words and digits joined by '-')
// from the 16-hex-digit names the fuzzer gives the inputs it saves.
func isSeedName(name string) bool {
	if len(name) == 16 {
		if _, err := hex.DecodeString(name); err == nil {
			return false
		}
	}
	for _, r := range name {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return name != ""
}

// Marshal encodes the values of one fuzz input in Go's corpus file format.
func Marshal(args ...any) []byte {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case string:
			fmt.Fprintf(&b, "string(%q)\n", v)
		case bool, int, int64, uint64, uint32, uint16:
			fmt.Fprintf(&b, "%T(%v)\n", v, v)
		default:
			panic(fmt.Sprintf("fuzztest.Marshal: unsupported type %T", a))
		}
	}
	return []byte(b.String())
}
