package exporter

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/snapshot"
)

func newTestStore(t *testing.T) *Store {
	t.Helper()
	root := t.TempDir()
	blobs, err := cache.Open(filepath.Join(root, "cache"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blobs.Close() })
	layers, err := snapshot.OpenLayerStore(filepath.Join(root, "layers"))
	if err != nil {
		t.Fatal(err)
	}
	return NewStore(blobs, layers)
}

func TestStoreLoadSaveRoundTrip(t *testing.T) {
	for _, format := range []string{"docker", "oci"} {
		t.Run(format, func(t *testing.T) {
			images := twoImages(t)
			dir := t.TempDir()
			in := filepath.Join(dir, "in.tar")
			write := WriteDocker
			if format == "oci" {
				write = func(ctx context.Context, p string, t []Tagged) error { return WriteOCI(ctx, p, t, Compression{}) }
			}
			if err := write(t.Context(), in, images); err != nil {
				t.Fatal(err)
			}
			st := newTestStore(t)
			loaded, err := st.Load(t.Context(), in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"app:v1", "app:latest", "localhost:5000/team/app:v2"}, loaded); diff != "" {
				t.Errorf("loaded (-want +got):\n%s", diff)
			}
			img, err := st.Image(t.Context(), "app:v1")
			if err != nil {
				t.Fatal(err)
			}
			checkImage(t, img)
			wantCfg, _ := images[0].Image.ConfigName()
			if got, _ := img.ConfigName(); got != wantCfg {
				t.Errorf("config %s, want %s", got, wantCfg)
			}
			out := filepath.Join(dir, "out.tar")
			if err := st.Save(t.Context(), out, []string{"app:v1", "localhost:5000/team/app:v2"}); err != nil {
				t.Fatal(err)
			}
			back, err := ReadArchive(t.Context(), out)
			if err != nil {
				t.Fatal(err)
			}
			for i, tg := range back {
				checkImage(t, tg.Image)
				if format == "docker" && mustDigest(t, tg.Image) != mustDigest(t, images[i].Image) {
					t.Errorf("image %d digest changed through load/save", i)
				}
			}
			if format == "docker" {
				again := filepath.Join(dir, "again.tar")
				if err := WriteDocker(t.Context(), again, []Tagged{{Image: images[0].Image, Tags: []string{"app:v1"}}, {Image: images[1].Image, Tags: []string{"localhost:5000/team/app:v2"}}}); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(mustRead(t, out), mustRead(t, again)) {
					t.Error("save after load is not byte-identical to the original write")
				}
			}
		})
	}
}

func TestStoreRefs(t *testing.T) {
	ctx := t.Context()
	st := newTestStore(t)
	ls := newFakeLayers()
	img := testImage(t, ls, map[string]string{"x": "1"})
	// Layers of img live only in the fake store, so Put writes them as blobs.
	digest, err := st.Put(ctx, img, []string{"busybox"})
	if err != nil {
		t.Fatal(err)
	}
	cfgName, _ := img.ConfigName()
	for _, ref := range []string{"busybox", "busybox:latest", "docker.io/library/busybox:latest", digest.String(),
		"busybox@" + digest.String(), digest.Hex[:12], cfgName.Hex[:12], "sha256:" + cfgName.Hex[:8]} {
		got, err := st.Image(ctx, ref)
		if err != nil {
			t.Errorf("Image(%q): %v", ref, err)
			continue
		}
		if mustDigest(t, got) != digest {
			t.Errorf("Image(%q) = %s, want %s", ref, mustDigest(t, got), digest)
		}
	}
	if _, err := st.Image(ctx, "nosuch:tag"); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("unknown tag: err = %v, want ErrNotFound", err)
	}
	if err := st.Tag(ctx, "busybox", "me/bb:v2"); err != nil {
		t.Fatal(err)
	}
	list, err := st.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || !cmp.Equal(list[0].Tags, []string{"busybox:latest", "me/bb:v2"}) || list[0].ConfigDigest != cfgName.String() {
		t.Errorf("List = %+v", list)
	}
	info, err := st.Inspect(ctx, "me/bb:v2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != cfgName.String() || info.Digest != digest.String() || len(info.Manifest.Layers) != 1 || info.Config.Config.Cmd[0] != "/hello" {
		t.Errorf("Inspect = %+v", info)
	}
	if err := st.Remove(ctx, "busybox"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Image(ctx, "busybox"); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("removed tag still resolves: %v", err)
	}
	if err := st.Remove(ctx, digest.String()); err != nil {
		t.Fatal(err)
	}
	if list, _ := st.List(ctx); len(list) != 0 {
		t.Errorf("after removing by digest: %+v", list)
	}
}

func TestStoreAmbiguousPrefix(t *testing.T) {
	ctx := t.Context()
	st := newTestStore(t)
	ls := newFakeLayers()
	for i := range 20 {
		img := testImage(t, ls, map[string]string{"x": strings.Repeat("y", i)})
		if _, err := st.Put(ctx, img, []string{"img:" + string(rune('a'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	// With 20 images × 2 digests, some single hex digit starts several.
	if _, err := st.prefix(ctx, "sha256:"); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("err = %v, want ambiguous", err)
	}
}

func TestWriteLocal(t *testing.T) {
	ls := newFakeLayers()
	img := testImage(t, ls, map[string]string{"etc/a": "1", "etc/b": "2"}, map[string]string{"etc/.wh.a": "", "etc/c": "3"})
	dir := filepath.Join(t.TempDir(), "root")
	if err := WriteLocal(t.Context(), dir, img); err != nil {
		t.Fatal(err)
	}
	var got []string
	entries, err := os.ReadDir(filepath.Join(dir, "etc"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if diff := cmp.Diff([]string{"b", "c"}, got); diff != "" {
		t.Errorf("etc (-want +got):\n%s", diff)
	}
}
