package snapshot_test

import (
	"testing"

	"github.com/builder-dev/builder/snapshot"
	"github.com/builder-dev/builder/snapshot/snapshottest"
	"github.com/google/go-cmp/cmp"
)

func newCopy(t *testing.T, layers *snapshot.LayerStore, root string) snapshot.Snapshotter {
	t.Helper()
	sn, err := snapshot.NewCopy(layers, root)
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

func TestCopyConformance(t *testing.T) {
	snapshottest.Run(t, newCopy)
}

// TestCopyMatchesOverlay: both snapshotters make byte-identical layers for
// the same changes.
func TestCopyMatchesOverlay(t *testing.T) {
	overlay := snapshottest.DiffIDs(t, newOverlay)
	cp := snapshottest.DiffIDs(t, newCopy)
	if diff := cmp.Diff(overlay, cp); diff != "" {
		t.Errorf("layer diffIDs (-overlay +copy):\n%s", diff)
	}
}
