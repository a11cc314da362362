package snapshot_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
	parents := commitLayers(t, e, 250)
	target := e.MountKey("top", parents)
	checkLayerFiles(t, target, 250)
	e.Unmount(target)
	if err := e.Sn.Remove(context.Background(), "top"); err != nil {
		t.Fatal(err)
	}
}

// TestOverlayManyLayersOldKernel: where the kernel has no fsconfig
// "lowerdir+" (before Linux 6.8: Debian 12, RHEL 9, Amazon Linux 2023),
// a stack beyond one page of store paths (about 36 layers) is mounted by
// naming the lower directories by descriptor; one beyond what that fits
// (some 220) fails naming the layer count and the kernel it needs.
func TestOverlayManyLayersOldKernel(t *testing.T) {
	e := snapshottest.NewEnv(t, newOverlay)
	parents := commitLayers(t, e, 250)
	snapshot.WithoutLowerdirAppend(t)
	target := e.MountKey("top", parents[:151])
	checkLayerFiles(t, target, 150)
	e.Unmount(target)

	mounts, err := e.Sn.Prepare(context.Background(), "all", parents)
	if err != nil {
		t.Fatal(err)
	}
	err = mounts[0].Mount(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "251 layers do not fit") || !strings.Contains(err.Error(), "Linux 6.8") {
		t.Errorf("mount of 251 layers without lowerdir+: %v, want an error naming the layers and the kernel", err)
	}
}

// commitLayers commits n layers on the base, layer i adding the file
// f<i> (a byte i), and returns the stack, the base first.
func commitLayers(t *testing.T, e *snapshottest.Env, n int) []string {
	t.Helper()
	parents := []string{e.Base}
	for i := range n {
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
	return parents
}

// checkLayerFiles checks that target shows the base and the files of
// the n layers commitLayers made.
func checkLayerFiles(t *testing.T, target string, n int) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(target, "etc/passwd")); err != nil {
		t.Errorf("through %d layers: %v", n+1, err)
	}
	for i := range n {
		b, err := os.ReadFile(filepath.Join(target, fmt.Sprintf("f%03d", i)))
		if err != nil || len(b) != 1 || b[0] != byte(i) {
			t.Errorf("through %d layers: f%03d: %q, %v", n+1, i, b, err)
		}
	}
}
