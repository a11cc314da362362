package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeAged writes files and waits out the racy window so their hashes are
// memoized.
func writeAged(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(racyWindow + 50*time.Millisecond)
}

// memoHit reports whether the memo holds path as it is now.
func memoHit(t *testing.T, s *Store, path string) bool {
	t.Helper()
	abs, _ := filepath.Abs(path)
	fi, err := os.Lstat(abs)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := statOf(fi)
	_, hit := s.hashes.get(abs, st)
	return hit
}

func TestHashFileMemo(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	dir := t.TempDir()
	p := filepath.Join(dir, "a.txt")
	writeAged(t, dir, map[string]string{"a.txt": "hello"})
	got, err := s.HashFile(ctx, p, nil)
	if err != nil || got != digestOf([]byte("hello")) {
		t.Fatalf("HashFile = %s, %v", got, err)
	}
	if !memoHit(t, s, p) {
		t.Fatal("hash not memoized")
	}
	if err := s.FlushHashes(ctx); err != nil {
		t.Fatal(err)
	}
	// Another process (a fresh Store on the same root) reuses the memo.
	s2, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if !memoHit(t, s2, p) {
		t.Fatal("memo not loaded by a second store")
	}
}

// TestHashFileSameSizeAndMtime is CACHE-07: content changed with size and
// mtime forced back still rehashes, because the ctime moved.
func TestHashFileSameSizeAndMtime(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	writeAged(t, dir, map[string]string{"f": "aaaa"})
	fi, _ := os.Lstat(p)
	if _, err := s.HashFile(ctx, p, fi); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("bbbb"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Lstat(p)
	if fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatal("test setup: size or mtime differ")
	}
	got, err := s.HashFile(ctx, p, fi2)
	if err != nil || got != digestOf([]byte("bbbb")) {
		t.Fatalf("HashFile after same-size, same-mtime rewrite = %s, %v; want hash of new content", got, err)
	}
}

// TestHashFileMtimeOnly: touching a file misses the memo (mtime is part of
// the memo key) but the hash, and so the cache key, is unchanged.
func TestHashFileMtimeOnly(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	writeAged(t, dir, map[string]string{"f": "same"})
	h1, err := s.HashFile(ctx, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	if memoHit(t, s, p) {
		t.Error("memo hit after mtime change")
	}
	h2, err := s.HashFile(ctx, p, nil)
	if err != nil || h2 != h1 {
		t.Errorf("hash after touch = %s, %v; want %s", h2, err, h1)
	}
}

func TestHashFileModeAndInode(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	writeAged(t, dir, map[string]string{"f": "x", "g": "y"})
	if _, err := s.HashFile(ctx, p, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if memoHit(t, s, p) {
		t.Error("memo hit after chmod")
	}
	// Replace by rename: a new inode with the other content.
	if err := os.Rename(filepath.Join(dir, "g"), p); err != nil {
		t.Fatal(err)
	}
	if got, err := s.HashFile(ctx, p, nil); err != nil || got != digestOf([]byte("y")) {
		t.Errorf("HashFile after rename-over = %s, %v", got, err)
	}
}

// TestHashFileMetaReplaced: a file read at a path that is not the inode
// the caller's stat described — renamed over since, or reached through a
// directory swapped for a symlink to a file outside the tree — is
// ErrFileReplaced, not that other file's digest.
func TestHashFileMetaReplaced(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	dir := t.TempDir()
	writeAged(t, dir, map[string]string{"f": "x", "g": "y", "sub/h": "h", "outside/h": "secret"})
	p := filepath.Join(dir, "f")
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "g"), p); err != nil {
		t.Fatal(err)
	}
	if sum, err := s.HashFileMeta(ctx, p, fi); !errors.Is(err, ErrFileReplaced) {
		t.Errorf("hash of a file renamed over since its stat = %v, %v; want ErrFileReplaced", sum, err)
	}

	h := filepath.Join(dir, "sub", "h")
	if fi, err = os.Lstat(h); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("outside", filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	if sum, err := s.HashFileMeta(ctx, h, fi); !errors.Is(err, ErrFileReplaced) {
		t.Errorf("hash through a directory swapped for a symlink = %v, %v; want ErrFileReplaced", sum, err)
	}
	// Stated now, the same path is what it is.
	if got, err := s.HashFile(ctx, h, nil); err != nil || got != digestOf([]byte("secret")) {
		t.Errorf("HashFile without a stat = %s, %v", got, err)
	}
}

func TestHashFileRecentNotMemoized(t *testing.T) {
	s := openStore(t)
	p := filepath.Join(t.TempDir(), "fresh")
	if err := os.WriteFile(p, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HashFile(t.Context(), p, nil); err != nil {
		t.Fatal(err)
	}
	if memoHit(t, s, p) {
		t.Error("a file changed within the racy window was memoized")
	}
}

func TestHashFileErrors(t *testing.T) {
	s := openStore(t)
	dir := t.TempDir()
	if _, err := s.HashFile(t.Context(), dir, nil); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("HashFile(dir) = %v, want error naming %s", err, dir)
	}
	missing := filepath.Join(dir, "missing")
	if _, err := s.HashFiles(t.Context(), []string{missing}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("HashFiles(missing) = %v, want error naming it", err)
	}
}

func TestHashFilesOrderAndFlushMerge(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	dir := t.TempDir()
	files := map[string]string{}
	var paths []string
	for i := range 300 {
		name := fmt.Sprintf("d%d/f%d", i%7, i)
		files[name] = fmt.Sprintf("content %d", i)
		paths = append(paths, filepath.Join(dir, name))
	}
	writeAged(t, dir, files)
	// Two stores (two processes) hash disjoint halves and flush; the memo
	// on disk ends up with both halves.
	s2, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.HashFiles(ctx, paths[150:]); err != nil {
		t.Fatal(err)
	}
	got, err := s.HashFiles(ctx, paths[:150])
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range got {
		if want := digestOf([]byte(files[strings.TrimPrefix(paths[i], dir+"/")])); d != want {
			t.Fatalf("HashFiles[%d] = %s, want %s", i, d, want)
		}
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.FlushHashes(ctx); err != nil {
		t.Fatal(err)
	}
	s3, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	for _, p := range paths {
		if !memoHit(t, s3, p) {
			t.Fatalf("memo lost %s", p)
		}
	}
}

func TestMemoShardCorruptIgnored(t *testing.T) {
	entries := map[string]memoEntry{"/a": {st: fileStat{Size: 1, Mtime: -5, Ctime: 7, Ino: 9, Dev: 3, Mode: 0o100644}}}
	data := encodeShard(entries)
	got, err := decodeShard(data)
	if err != nil || got["/a"] != entries["/a"] {
		t.Fatalf("round trip = %v, %v", got, err)
	}
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x40
		if _, err := decodeShard(bad); err == nil {
			t.Fatalf("flipped byte %d accepted", i)
		}
	}
	if _, err := decodeShard(data[:len(data)-1]); err == nil {
		t.Fatal("truncated shard accepted")
	}
}

func BenchmarkHashFilesWarm(b *testing.B) {
	dir := b.TempDir()
	files := map[string]string{}
	var paths []string
	for i := range 20000 {
		name := fmt.Sprintf("d%03d/f%05d.txt", i%200, i)
		files[name] = strings.Repeat(fmt.Sprintf("line %d\n", i), 64)
		paths = append(paths, filepath.Join(dir, name))
	}
	writeAged(b, dir, files)
	root := b.TempDir()
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			s, err := Open(filepath.Join(b.TempDir(), "store"))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.HashFiles(b.Context(), paths); err != nil {
				b.Fatal(err)
			}
		}
	})
	s, err := Open(root)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.HashFiles(b.Context(), paths); err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.Run("warm", func(b *testing.B) {
		for b.Loop() {
			s, err := Open(root) // a new process: memo loaded from disk
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.HashFiles(b.Context(), paths); err != nil {
				b.Fatal(err)
			}
		}
	})
}
