package main

import (
	"slices"
	"testing"
)

// TestE2ERunRepeatedLayers: RUN steps that change nothing, or change the
// same thing, make identical layers; the steps after them must still run,
// on either snapshotter, and the image keeps one layer per step.
func TestE2ERunRepeatedLayers(t *testing.T) {
	e := newEnv(t)
	df := `FROM busybox:fixture
RUN echo building
RUN echo testing
RUN echo hi > /x
RUN rm /x
RUN echo hi > /x
RUN true
RUN cat /x > /y
`
	ctx := e.context(df, nil)
	for _, sn := range []string{"overlay", "copy"} {
		t.Run(sn, func(t *testing.T) {
			img := readImage(t, e.buildTar(ctx, sn, "--no-cache", "--network", "none", "--snapshotter", sn,
				"--build-arg", "SOURCE_DATE_EPOCH=1700000000"))
			if len(img.diffIDs) != 8 {
				t.Fatalf("%d layers, want 8 (base + one per RUN)", len(img.diffIDs))
			}
			empty := img.diffIDs[1]
			for _, i := range []int{2, 6} {
				if img.diffIDs[i] != empty {
					t.Errorf("layer %d = %s, want the empty layer %s", i, img.diffIDs[i], empty)
				}
			}
			if img.diffIDs[3] != img.diffIDs[5] {
				t.Errorf("layers 3 and 5 (echo hi > /x) differ: %s, %s", img.diffIDs[3], img.diffIDs[5])
			}
			if got := names(img.layers[7]); !slices.Equal(got, []string{"y"}) {
				t.Errorf("last layer = %v, want [y]", got)
			}
			for _, p := range []string{"/x", "/y"} {
				if got := treeContent(t, img.tree, p); got != "hi\n" {
					t.Errorf("%s = %q, want %q", p, got, "hi\n")
				}
			}
			e.checkNoActive()
		})
	}
}
