package snapshot_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/builder-dev/builder/snapshot"
	"github.com/builder-dev/builder/snapshot/snapshottest"
)

func newOverlay(t *testing.T, layers *snapshot.LayerStore, root string) snapshot.Snapshotter {
	t.Helper()
	requireOverlay(t)
	sn, err := snapshot.NewOverlay(layers, root)
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

// requireOverlay skips when overlayfs cannot be mounted (fails with CI=true).
func requireOverlay(t testing.TB) {
	t.Helper()
	snapshottest.RequireRoot(t)
	err := snapshot.CheckOverlay(context.Background(), t.TempDir())
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("overlayfs unavailable and CI=true: %v", err)
	}
	t.Skipf("overlayfs unavailable: %v", err)
}

func TestOverlayConformance(t *testing.T) {
	snapshottest.Run(t, newOverlay)
}

// TestOverlayManyLayers mounts 250 layers: the lowerdir list is far beyond
// one page, so Mount must take the fsconfig path.
func TestOverlayManyLayers(t *testing.T) {
	e := snapshottest.NewEnv(t, newOverlay)
	parents := []string{e.Base}
	for i := range 250 {
		key := fmt.Sprintf("l%d", i)
		target := e.MountKey(key, parents)
		if err := os.WriteFile(filepath.Join(target, fmt.Sprintf("f%03d", i)), []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		e.Unmount(target)
		layer, err := e.Sn.Commit(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		parents = append(parents, layer.DiffID)
	}
	target := e.MountKey("top", parents)
	for _, name := range []string{"f000", "f249", "etc/passwd"} {
		if _, err := os.Stat(filepath.Join(target, name)); err != nil {
			t.Errorf("through 251 layers: %v", err)
		}
	}
	e.Unmount(target)
	if err := e.Sn.Remove(context.Background(), "top"); err != nil {
		t.Fatal(err)
	}
}
