package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/builder-dev/builder/snapshot"
)

// TestPrepareFetchesMissingParents: a snapshot over a parent layer the
// store lacks asks the fetcher for it first (a layer hit in a remote cache
// is fetched only then); without a fetcher, or when it fails, Prepare
// fails naming the parent.
func TestPrepareFetchesMissingParents(t *testing.T) {
	_, data := committedTar(t)
	id := digestOf(data)
	tmp := t.TempDir()
	layers, err := snapshot.OpenLayerStore(filepath.Join(tmp, "layers"))
	if err != nil {
		t.Fatal(err)
	}
	sn := newCopy(t, layers, filepath.Join(tmp, "active"))
	ctx := context.Background()
	if _, err := sn.Prepare(ctx, "none", []string{id}); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("Prepare over a missing parent without a fetcher: %v, want ErrNotFound", err)
	}
	boom := errors.New("registry unreachable")
	layers.SetFetcher(func(context.Context, string) error { return boom })
	if _, err := sn.Prepare(ctx, "failing", []string{id}); !errors.Is(err, boom) {
		t.Fatalf("Prepare with a failing fetcher: %v, want its error", err)
	}
	var asked []string
	layers.SetFetcher(func(ctx context.Context, diffID string) error {
		asked = append(asked, diffID)
		_, err := layers.Unpack(ctx, diffID, bytes.NewReader(data))
		return err
	})
	if _, err := sn.Prepare(ctx, "fetched", []string{id}); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.View(ctx, "again", []string{id}); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 1 || asked[0] != id || !layers.Has(id) {
		t.Errorf("fetcher asked for %v (layer here: %v), want %s once", asked, layers.Has(id), id)
	}
}
