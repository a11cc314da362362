package snapshot_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/builder-dev/builder/snapshot"
)

// BenchmarkCommitSmallChange commits 3 changed files over a base of 20 and
// of 20,000 files: an overlay commit walks only the upper directory, so the
// time must not grow with the base.
func BenchmarkCommitSmallChange(b *testing.B) {
	for _, n := range []int{20, 20_000} {
		b.Run(fmt.Sprintf("base=%d", n), func(b *testing.B) { benchCommit(b, n) })
	}
}

func benchCommit(b *testing.B, files int) {
	requireOverlay(b)
	ctx := context.Background()
	tmp := b.TempDir()
	layers, err := snapshot.OpenLayerStore(filepath.Join(tmp, "layers"))
	if err != nil {
		b.Fatal(err)
	}
	sn, err := snapshot.NewOverlay(layers, filepath.Join(tmp, "active"))
	if err != nil {
		b.Fatal(err)
	}
	base := benchLayer(b, sn, "base", nil, func(root string) {
		for i := range files {
			dir := filepath.Join(root, fmt.Sprintf("d%03d", i%100))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), []byte("content"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		key := fmt.Sprintf("step%d", i)
		target := benchMount(b, sn, key, []string{base})
		writeOrFail(b, filepath.Join(target, "d000/f0"), fmt.Sprintf("changed %d", i))
		writeOrFail(b, filepath.Join(target, "d001/new"), "new")
		if err := os.Remove(filepath.Join(target, fmt.Sprintf("d%03d/f%d", (files-1)%100, files-1))); err != nil {
			b.Fatal(err)
		}
		if err := snapshot.Unmount(target); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := sn.Commit(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
}

func benchLayer(b *testing.B, sn snapshot.Snapshotter, key string, parents []string, fill func(root string)) string {
	target := benchMount(b, sn, key, parents)
	fill(target)
	if err := snapshot.Unmount(target); err != nil {
		b.Fatal(err)
	}
	layer, err := sn.Commit(context.Background(), key)
	if err != nil {
		b.Fatal(err)
	}
	return layer.DiffID
}

func benchMount(b *testing.B, sn snapshot.Snapshotter, key string, parents []string) string {
	mounts, err := sn.Prepare(context.Background(), key, parents)
	if err != nil {
		b.Fatal(err)
	}
	target := b.TempDir()
	for _, m := range mounts {
		if err := m.Mount(target); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { _ = snapshot.Unmount(target) })
	return target
}

func writeOrFail(b *testing.B, p, content string) {
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		b.Fatal(err)
	}
}
