package snapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// commitStatLayer commits a small directory into a new layer store; with
// settle, after the racy window has passed since its files were written.
func commitStatLayer(t *testing.T, settle bool) (*LayerStore, string) {
	t.Helper()
	root := t.TempDir()
	s, err := OpenLayerStore(filepath.Join(root, "layers"))
	check(t, err)
	up := filepath.Join(root, "upper")
	check(t, os.MkdirAll(filepath.Join(up, "sub"), 0o755))
	check(t, os.WriteFile(filepath.Join(up, "a"), []byte("hello"), 0o644))
	check(t, os.WriteFile(filepath.Join(up, "sub", "b"), bytes.Repeat([]byte("b"), 200<<10), 0o644))
	if settle {
		time.Sleep(statRacyWindow + 50*time.Millisecond)
	}
	layer, err := s.commitDir(context.Background(), up, nil, nil, nil)
	check(t, err)
	return s, layer.DiffID
}

func tarDigest(t *testing.T, s *LayerStore, diffID string) (string, error) {
	t.Helper()
	var buf bytes.Buffer
	_, err := s.WriteTar(context.Background(), diffID, &buf)
	return fmt.Sprintf("sha256:%x", sha256.Sum256(buf.Bytes())), err
}

// TestStatDigestTrustedAfterCommit: a commit records the stat digest of
// the layer; WriteTar of the unchanged layer writes the same tar.
func TestStatDigestTrustedAfterCommit(t *testing.T) {
	s, id := commitStatLayer(t, true)
	meta, err := s.metadata(id)
	check(t, err)
	if meta.StatDigest == "" {
		t.Fatal("the commit recorded no stat digest")
	}
	got, err := tarDigest(t, s, id)
	if err != nil || got != id {
		t.Fatalf("WriteTar: %s, %v; want %s", got, err, id)
	}
}

// TestStatDigestOfFreshFiles: a commit right after its files were
// written (a RUN's, a COPY's) waits for them to leave the racy window and
// records the stat digest too.
func TestStatDigestOfFreshFiles(t *testing.T) {
	s, id := commitStatLayer(t, false)
	meta, err := s.metadata(id)
	check(t, err)
	if meta.StatDigest == "" {
		t.Fatal("the commit of fresh files recorded no stat digest")
	}
}

// TestStatDigestSeesContentChange: a file rewritten with content of the
// same size and its mtime set back still changes the layer's stat (its
// ctime), so WriteTar hashes it and finds it modified.
func TestStatDigestSeesContentChange(t *testing.T) {
	s, id := commitStatLayer(t, true)
	p := filepath.Join(s.Dir(id), "a")
	fi, err := os.Stat(p)
	check(t, err)
	check(t, os.WriteFile(p, []byte("jello"), 0o644))
	check(t, os.Chtimes(p, fi.ModTime(), fi.ModTime()))
	if _, err := tarDigest(t, s, id); !errors.Is(err, ErrModified) {
		t.Fatalf("WriteTar of a layer changed on disk: %v, want ErrModified", err)
	}
}

// TestStatDigestRecordedByVerifiedWrite: a layer without a stat digest
// (committed within the racy window) gets one from the first WriteTar
// that hashed it and found it unchanged.
func TestStatDigestRecordedByVerifiedWrite(t *testing.T) {
	s, id := commitStatLayer(t, true)
	meta, err := s.metadata(id)
	check(t, err)
	want := meta.StatDigest
	meta.StatDigest = ""
	check(t, s.writeMetadata(id, meta))
	if got, err := tarDigest(t, s, id); err != nil || got != id {
		t.Fatalf("WriteTar: %s, %v; want %s", got, err, id)
	}
	meta, err = s.metadata(id)
	check(t, err)
	if meta.StatDigest != want {
		t.Fatalf("stat digest after a verified WriteTar: %q, want %q", meta.StatDigest, want)
	}
}

// TestVerifyHashesDespiteStatDigest: Verify (fsck) hashes the content
// even when the stat digest matches, as for a change stat cannot show
// (simulated by recording the changed layer's stat digest).
func TestVerifyHashesDespiteStatDigest(t *testing.T) {
	s, id := commitStatLayer(t, true)
	p := filepath.Join(s.Dir(id), "a")
	check(t, os.WriteFile(p, []byte("jello"), 0o644))
	time.Sleep(statRacyWindow + 50*time.Millisecond)
	entries, err := collectEntries(context.Background(), s.Dir(id))
	check(t, err)
	meta, err := s.metadata(id)
	check(t, err)
	meta.StatDigest = statDigest(entries, time.Now())
	check(t, s.writeMetadata(id, meta))
	if _, err := tarDigest(t, s, id); err != nil {
		t.Fatalf("WriteTar trusting the recorded stat: %v", err)
	}
	if _, err := s.Verify(context.Background(), id, nil); !errors.Is(err, ErrModified) {
		t.Fatalf("Verify: %v, want ErrModified", err)
	}
}

// TestStatDigestRacy: entries changed within the racy window of their
// stat give no digest; any entry's ctime, inode or name changes it.
func TestStatDigestRacy(t *testing.T) {
	now := time.Now()
	e := tarEntry{name: "a", kind: kindFile}
	e.st.Ctim.Sec, e.st.Ctim.Nsec = now.Unix(), int64(now.Nanosecond())
	if d := statDigest([]tarEntry{e}, now); d != "" {
		t.Errorf("digest of an entry changed at its stat time: %q", d)
	}
	coarse := e
	coarse.st.Ctim.Nsec = 0
	if d := statDigest([]tarEntry{coarse}, now.Add(time.Second)); d != "" {
		t.Errorf("digest of an entry of whole-second times changed a second before its stat: %q", d)
	}
	if d := statDigest([]tarEntry{coarse}, now.Add(3*time.Second)); d == "" {
		t.Error("no digest for a settled entry of whole-second times")
	}
	if w := racyWait([]tarEntry{e}, now); w <= 0 || w > statRacyWindow+time.Millisecond {
		t.Errorf("wait for an entry changed at its stat: %v", w)
	}
	later := now.Add(time.Second)
	base := statDigest([]tarEntry{e}, later)
	if base == "" {
		t.Fatal("no digest for a settled entry")
	}
	for name, change := range map[string]func(*tarEntry){
		"ctime": func(e *tarEntry) { e.st.Ctim.Nsec++ },
		"inode": func(e *tarEntry) { e.st.Ino++ },
		"name":  func(e *tarEntry) { e.name = "b" },
		"size":  func(e *tarEntry) { e.st.Size++ },
	} {
		c := e
		change(&c)
		if d := statDigest([]tarEntry{c}, later); d == base || d == "" {
			t.Errorf("%s changed: digest %q, unchanged was %q", name, d, base)
		}
	}
}

// TestCollectSettledRestat: entries changed just before the commit are
// stat'ed again after the racy window, and one changed meanwhile makes the
// whole directory be listed again; either way the stats collected are the
// ones on disk and the digest is recorded.
func TestCollectSettledRestat(t *testing.T) {
	dir := t.TempDir()
	check(t, os.MkdirAll(filepath.Join(dir, "old"), 0o755))
	check(t, os.WriteFile(filepath.Join(dir, "old", "f"), []byte("old"), 0o644))
	time.Sleep(statRacyWindow + 20*time.Millisecond)
	check(t, os.WriteFile(filepath.Join(dir, "new"), []byte("new"), 0o644))
	statAt := time.Now()
	entries, err := collectEntries(context.Background(), dir)
	check(t, err)
	if racyWait(entries, statAt) == 0 {
		t.Fatal("a file written just before its stat is not racy")
	}
	time.Sleep(statRacyWindow + 5*time.Millisecond)
	if !restatRacy(entries, statAt) {
		t.Error("unchanged racy entries reported as changed")
	}
	// A racy entry changed after the first stat: the second one differs.
	check(t, os.WriteFile(filepath.Join(dir, "new"), []byte("newer"), 0o644))
	if restatRacy(entries, statAt) {
		t.Error("a racy entry written again after its stat reported as unchanged")
	}
	// A settled entry is not stat'ed again: the digest already misses
	// any change to it through its ctime.
	check(t, os.WriteFile(filepath.Join(dir, "old", "f"), []byte("changed"), 0o644))
	sub := []tarEntry{}
	for _, e := range entries {
		if e.name == "old/f" {
			sub = append(sub, e)
		}
	}
	if len(sub) != 1 || !restatRacy(sub, statAt) {
		t.Errorf("settled entries %v: restat reported a change", sub)
	}

	at, got, err := collectSettled(context.Background(), dir, nil)
	check(t, err)
	if statDigest(got, at) == "" {
		t.Error("no stat digest after the settled collection")
	}
	for _, e := range got {
		var st unix.Stat_t
		check(t, unix.Lstat(e.src, &st))
		if !sameStat(&st, &e.st) {
			t.Errorf("%s: collected stat differs from the file's", e.name)
		}
	}
}
