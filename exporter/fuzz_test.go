package exporter

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/internal/fuzztest"
	"github.com/builder-dev/builder/snapshot"
	"github.com/google/go-cmp/cmp"
)

// fuzzLoadBounds: an input gets 5 s. Allocation allows for decoders that
// allocate what a header asks: a zstd frame may ask for a 512 MiB window
// (klauspost/compress's limit), and Load unpacks up to 3 layers at once.
var fuzzLoadBounds = fuzztest.Bounds{Timeout: 5 * time.Second, Grace: 3 * time.Second, MaxAlloc: 2 << 30}

// FuzzLoad is `builder load -i FILE` of arbitrary bytes: Store.Load of a
// docker-save or OCI-layout archive into a fresh store (cache and layer
// store) on a tmpfs. It checks: no panic; bounded time and allocation;
// nothing outside the store changes (the input archive, a victim tree
// beside it); and when Load succeeds, every name it returns resolves in
// the store, and the loaded images save to a docker archive that reads
// back as the same images (configs). Seeds: testdata/fuzz/FuzzLoad (see
// TestFuzzSeeds).
func FuzzLoad(f *testing.F) {
	scratch := fuzztest.ScratchDir(f)
	victim := filepath.Join(scratch, "victim")
	for name, body := range map[string]string{"victim/secret": "host secret", "victim/sub/f": "f", "etc/passwd": "root:x:0:0"} {
		p := filepath.Join(scratch, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.Symlink(victim, filepath.Join(scratch, "victim-link")); err != nil {
		f.Fatal(err)
	}
	in, out, root := filepath.Join(scratch, "in.tar"), filepath.Join(scratch, "out.tar"), filepath.Join(scratch, "store")
	f.Fuzz(func(t *testing.T, archive []byte) {
		if err := os.WriteFile(in, archive, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := fuzztest.RemoveAll(root); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(out)
		before := fuzztest.Listing(t, scratch, "store", "out.tar")
		blobs, err := cache.Open(filepath.Join(root, "cache"))
		if err != nil {
			t.Fatal(err)
		}
		defer blobs.Close()
		layers, err := snapshot.OpenLayerStore(filepath.Join(root, "layers"))
		if err != nil {
			t.Fatal(err)
		}
		st := NewStore(blobs, layers)
		fuzztest.Run(t, fuzzLoadBounds, func(ctx context.Context) {
			loaded, err := st.Load(ctx, in)
			if err != nil {
				return
			}
			fuzzCheckLoaded(ctx, t, st, loaded, out)
		})
		if diff := cmp.Diff(before, fuzztest.Listing(t, scratch, "store", "out.tar")); diff != "" {
			t.Fatalf("Load changed files outside the store (-before +after):\n%s", diff)
		}
	})
}

// fuzzCheckLoaded checks what a successful Load returned.
func fuzzCheckLoaded(ctx context.Context, t *testing.T, st *Store, loaded []string, out string) {
	t.Helper()
	var want []string
	for _, name := range loaded {
		img, err := st.Image(ctx, name)
		if err != nil {
			t.Fatalf("loaded %q does not resolve: %v", name, err)
		}
		d, err := img.ConfigName()
		if err != nil {
			t.Fatalf("loaded %q: config: %v", name, err)
		}
		if !slices.Contains(want, d.String()) {
			want = append(want, d.String())
		}
	}
	if err := st.Save(ctx, out, loaded); err != nil {
		if ctx.Err() == nil {
			t.Fatalf("save loaded images %q: %v", loaded, err)
		}
		return
	}
	images, err := ReadArchive(ctx, out)
	if err != nil {
		t.Fatalf("read the saved archive: %v", err)
	}
	var got []string
	for _, im := range images {
		d, err := im.Image.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, d.String())
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) { // configs: a gzip layer is saved uncompressed, under a new manifest
		t.Fatalf("saved archive holds image configs %q, loaded %q", got, want)
	}
}
