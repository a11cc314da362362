package cache

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestRecordSealCatchesEveryFlip: whatever single byte of a stored record
// is changed (to any other ASCII byte or to a non-ASCII one), Lookup either
// reports the record corrupt (a miss, the record removed) or returns the
// record unchanged; never a record with different content.
func TestRecordSealCatchesEveryFlip(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	d := mustWriteBlob(t, s, []byte("layer"))
	rec := helperRecord(s, d)
	if err := s.Put(ctx, rec); err != nil {
		t.Fatal(err)
	}
	p := s.keyPath(rec.Key)
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(orig, []byte(`,"sum":"`)) {
		t.Fatalf("record is not sealed: %s", orig)
	}
	want, err := s.Lookup(ctx, rec.Key)
	if err != nil {
		t.Fatal(err)
	}
	for i := range orig {
		for _, mask := range []byte{0x01, 0x20, 0xff} {
			bad := bytes.Clone(orig)
			bad[i] ^= mask
			if err := os.WriteFile(p, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := s.Lookup(ctx, rec.Key)
			if err != nil {
				if !errors.Is(err, ErrNotFound) || !errors.Is(err, ErrCorrupt) {
					t.Fatalf("byte %d ^ %#x: Lookup error %v is not a corrupt miss", i, mask, err)
				}
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Fatalf("byte %d ^ %#x: the corrupt record was kept", i, mask)
				}
				continue
			}
			got.LastUsed, want.LastUsed = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("byte %d ^ %#x: Lookup returned a changed record:\n%+v\nwant\n%+v", i, mask, got, want)
			}
		}
	}
}

func TestBuildRecordSealed(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	b := &BuildRecord{ID: "b1", Project: "p", Started: time.Now(), Finished: time.Now(), Steps: []StepRecord{{Instruction: "RUN make", Cache: "miss"}}}
	if err := s.PutBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.Root(), "builds", "b1.json")
	data, _ := os.ReadFile(p)
	bad := bytes.Replace(data, []byte("RUN make"), []byte("RUN mbke"), 1)
	if err := os.WriteFile(p, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetBuild(ctx, "b1"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("GetBuild of a changed record: %v, want ErrCorrupt", err)
	}
	if _, err := s.LatestBuild(ctx, "p"); !errors.Is(err, ErrNotFound) {
		t.Errorf("LatestBuild with only a changed record: %v, want ErrNotFound", err)
	}
	probs, err := s.FsckBuilds(ctx, FsckOptions{})
	if err != nil || len(probs) != 1 || probs[0].Path != filepath.Join("builds", "b1.json") {
		t.Fatalf("FsckBuilds = %v, %v", probs, err)
	}
	if probs, _ := s.FsckBuilds(ctx, FsckOptions{Repair: true}); len(probs) != 2 || probs[0].Repaired != "removed" || probs[1].Repaired != "removed" {
		t.Errorf("FsckBuilds --repair = %v, want the record and its dangling pointer removed", probs)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("repair kept the damaged build record")
	}
	// The project's pointer to it dangled then, and went too.
	if probs, _ := s.FsckBuilds(ctx, FsckOptions{}); len(probs) != 0 {
		t.Errorf("FsckBuilds after repair = %v", probs)
	}
}

func TestFsckBlobs(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	good := mustWriteBlob(t, s, []byte("good blob"))
	flipped := mustWriteBlob(t, s, []byte("flipped blob"))
	short := mustWriteBlob(t, s, []byte("truncated blob"))
	path := func(d string) string {
		return filepath.Join(s.Root(), "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
	}
	if err := os.WriteFile(path(flipped), []byte("flipped blub"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path(short), 3); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Root(), "blobs", "sha256", "stray"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	needs := func(d string) (string, string) {
		if d == flipped {
			return "image app:1 (config)", "builder build it again"
		}
		return "", ""
	}
	probs, err := s.FsckBlobs(ctx, FsckOptions{Needs: needs})
	if err != nil {
		t.Fatal(err)
	}
	if len(probs) != 3 {
		t.Fatalf("FsckBlobs = %v, want 3 problems", probs)
	}
	text := ""
	for _, p := range probs {
		text += p.String() + "\n"
	}
	for _, want := range []string{strings.TrimPrefix(flipped, "sha256:"), "needed by image app:1 (config); builder build it again", strings.TrimPrefix(short, "sha256:"), "stray: not a blob"} {
		if !strings.Contains(text, want) {
			t.Errorf("FsckBlobs report lacks %q:\n%s", want, text)
		}
	}
	for _, d := range []string{flipped, short} {
		if !s.HasBlob(d) {
			t.Errorf("FsckBlobs without repair removed %s", d)
		}
	}
	if _, err := s.FsckBlobs(ctx, FsckOptions{Repair: true}); err != nil {
		t.Fatal(err)
	}
	if s.HasBlob(flipped) || s.HasBlob(short) || !s.HasBlob(good) {
		t.Errorf("repair: flipped %v short %v good %v; want only the good blob", s.HasBlob(flipped), s.HasBlob(short), s.HasBlob(good))
	}
	if probs, _ := s.FsckBlobs(ctx, FsckOptions{}); len(probs) != 0 {
		t.Errorf("FsckBlobs after repair = %v", probs)
	}
	if err := s.VerifyBlob(ctx, good); err != nil {
		t.Errorf("VerifyBlob(good) = %v", err)
	}
	if err := s.VerifyBlob(ctx, short); !errors.Is(err, ErrNotFound) {
		t.Errorf("VerifyBlob(removed) = %v, want ErrNotFound", err)
	}
}

func TestFsckRecords(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	layer := mustWriteBlob(t, s, []byte("layer"))
	gone := mustWriteBlob(t, s, []byte("gone"))
	mk := func(name string, blobs ...string) *Record {
		in := Inputs{Op: "RUN", Fields: []Field{{Name: "argv", Value: name}}}
		r := &Record{Key: KeyOf(Key{}, in), Inputs: in, DiffID: layer, CreatedBy: "RUN " + name, Blobs: blobs}
		if err := s.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	ok, noBlob, noLayer, damaged := mk("ok"), mk("noblob", gone), mk("nolayer"), mk("damaged")
	noLayer.DiffID = digestOf([]byte("no such layer"))
	if err := s.Put(ctx, noLayer); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveBlob(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(s.keyPath(damaged.Key), 20); err != nil {
		t.Fatal(err)
	}
	hasLayer := func(d string) bool { return d == layer }
	probs, err := s.FsckRecords(ctx, FsckOptions{HasLayer: hasLayer})
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, p := range probs {
		found[p.Digest] = true
	}
	if len(probs) != 3 || !found[noBlob.Key.String()] || !found[noLayer.Key.String()] || !found[damaged.Key.String()] {
		t.Fatalf("FsckRecords = %v", probs)
	}
	if _, err := os.Stat(s.keyPath(damaged.Key)); err != nil {
		t.Errorf("FsckRecords without repair removed a record: %v", err)
	}
	if _, err := s.FsckRecords(ctx, FsckOptions{HasLayer: hasLayer, Repair: true}); err != nil {
		t.Fatal(err)
	}
	if probs, _ := s.FsckRecords(ctx, FsckOptions{HasLayer: hasLayer}); len(probs) != 0 {
		t.Errorf("FsckRecords after repair = %v", probs)
	}
	if _, err := s.Lookup(ctx, ok.Key); err != nil {
		t.Errorf("repair removed the good record: %v", err)
	}
}

func TestFsckHashes(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("content"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	os.Chtimes(f, old, old)
	time.Sleep(150 * time.Millisecond) // out of the racy window
	if _, err := s.HashFile(ctx, f, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.FlushHashes(ctx); err != nil {
		t.Fatal(err)
	}
	shards, _ := filepath.Glob(filepath.Join(s.Root(), "hashes", "*.memo"))
	if len(shards) != 1 {
		t.Fatalf("memo shards: %v", shards)
	}
	if probs, _ := s.FsckHashes(ctx, FsckOptions{}); len(probs) != 0 {
		t.Fatalf("FsckHashes on a good memo = %v", probs)
	}
	data, _ := os.ReadFile(shards[0])
	data[len(data)/2] ^= 0xff
	os.WriteFile(shards[0], data, 0o600)
	if probs, _ := s.FsckHashes(ctx, FsckOptions{Repair: true}); len(probs) != 1 || probs[0].Repaired != "removed" {
		t.Errorf("FsckHashes on a flipped shard = %v", probs)
	}
	if _, err := os.Stat(shards[0]); !os.IsNotExist(err) {
		t.Errorf("repair kept the damaged shard")
	}
}

// TestIndexDamageAndRepair: a flipped, truncated or deleted index.json is
// an error naming the file and fsck --repair, never an empty tag list; the
// repair restores every tag from what is left, the copy and the build
// records.
func TestIndexDamageAndRepair(t *testing.T) {
	for _, mode := range []string{"flip", "truncate", "delete", "delete-both"} {
		t.Run(mode, func(t *testing.T) {
			s := openStore(t)
			ctx := t.Context()
			m1 := writeManifest(t, s, digestOf([]byte("c1")))
			m2 := writeManifest(t, s, digestOf([]byte("c2")))
			for _, tag := range []string{"a:1", "b:1", "c:1"} {
				if err := s.SetTag(ctx, tag, m1); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.SetTag(ctx, "built:1", m2); err != nil {
				t.Fatal(err)
			}
			b := &BuildRecord{ID: "b1", Project: "p", Started: time.Now(), Finished: time.Now(), ImageDigest: m2, Tags: []string{"built:1"}}
			if err := s.PutBuild(ctx, b); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(s.Root(), "images", "index.json")
			data, _ := os.ReadFile(p)
			switch mode {
			case "flip":
				data[len(data)/2] ^= 0xff
				os.WriteFile(p, data, 0o600)
			case "truncate":
				os.Truncate(p, int64(len(data)/2))
			case "delete":
				os.Remove(p)
			case "delete-both":
				os.Remove(p)
				os.Remove(p + ".bak")
			}
			_, err := s.Tags(ctx)
			if mode == "delete-both" {
				// Nothing says there were tags: an empty store.
				if err != nil {
					t.Fatalf("Tags with no index at all: %v", err)
				}
			} else {
				var ie *IndexError
				if !errors.As(err, &ie) || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "builder fsck --repair") {
					t.Fatalf("Tags on a damaged index: %v, want an IndexError naming %s and the repair", err, p)
				}
				if err := s.SetTag(ctx, "d:1", m1); !errors.As(err, &ie) {
					t.Errorf("SetTag on a damaged index: %v, want the IndexError", err)
				}
				probs, err := s.FsckIndex(ctx, FsckOptions{})
				if err != nil || len(probs) != 1 || probs[0].Path != filepath.Join("images", "index.json") {
					t.Fatalf("FsckIndex = %v, %v", probs, err)
				}
				probs, err = s.FsckIndex(ctx, FsckOptions{Repair: true})
				if err != nil || len(probs) != 1 || !strings.HasPrefix(probs[0].Repaired, "rebuilt it with") {
					t.Fatalf("FsckIndex --repair = %v, %v", probs, err)
				}
			}
			if mode == "delete-both" {
				if _, err := s.RepairIndex(ctx); err != nil {
					t.Fatal(err)
				}
			}
			tags, err := s.Tags(ctx)
			if err != nil {
				t.Fatalf("Tags after repair: %v", err)
			}
			var names []string
			for _, tg := range tags {
				names = append(names, FamiliarName(tg.Name))
			}
			want := []string{"a:1", "b:1", "built:1", "c:1"}
			if mode == "delete-both" {
				want = []string{"built:1"} // only the build record knows
			}
			if !reflect.DeepEqual(names, want) {
				t.Errorf("tags after repair = %v, want %v", names, want)
			}
			if probs, _ := s.FsckIndex(ctx, FsckOptions{}); len(probs) != 0 {
				t.Errorf("FsckIndex after repair = %v", probs)
			}
		})
	}
}

func TestSalvageIndex(t *testing.T) {
	d := func(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }
	data := []byte(`{"schemaVersion":2,"manifests":[` +
		`{"mediaType":"m","digest":"` + d('a') + `","size":1,"annotations":{"org.opencontainers.image.ref.name":"docker.io/library/a:1"}},` +
		`{"mediaType":"m","digest":"` + d('b') + `","size":1,"annotations":{"org.opencontainers.image.ref.name":"docker.io/library/b:` + "\xff" + `"}},` +
		`{"mediaType":"m","digest":"` + d('c') + `","size":1,"annotations":{"org.opencontainers.image.ref.name":"docker.io/library/c:1"}},` +
		`{"mediaType":"m","digest":"` + d('d') + `","si`)
	entries, lost := salvageIndex(data)
	if len(entries) != 2 || entries[0].Digest != d('a') || entries[1].Digest != d('c') || lost != 2 {
		t.Errorf("salvageIndex = %+v, lost %d; want a and c, 2 lost", entries, lost)
	}
}

// TestFsckBuildsBesideRemovals: `builder fsck` run while `prune` trims
// build records and `builds rm` removes one reports nothing: a record
// removed after fsck listed it, a pointer removed with its build.
func TestFsckBuildsBesideRemovals(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	start := time.Now()
	n := 0
	put := func(project string) string {
		n++
		id := fmt.Sprintf("b%04d", n)
		at := start.Add(time.Duration(n) * time.Second)
		b := &BuildRecord{ID: id, Project: project, ImageDigest: fmt.Sprintf("sha256:%064x", n), Started: at, Finished: at}
		if err := s.PutBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
		return id
	}
	for round := range 40 {
		var ids []string
		for p := range 6 {
			ids = append(ids, put(fmt.Sprintf("r%d-p%d", round, p)))
		}
		done := make(chan error, 1)
		go func() {
			_, _, err := s.TrimBuilds(ctx, 3)
			if err == nil {
				err = s.RemoveBuild(ctx, ids[5])
			}
			done <- err
		}()
		for finished := false; !finished; {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				finished = true
			default:
			}
			probs, err := s.FsckBuilds(ctx, FsckOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(probs) > 0 {
				t.Fatalf("round %d: fsck beside removals reports %v", round, probs)
			}
		}
	}
}
