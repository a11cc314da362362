package executor

import (
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Layers without a history entry (a named local context's files) get
// BuildKit's exporter entries, appended, describing the last layers.
func TestHistoryForLayers(t *testing.T) {
	t0 := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	epoch := time.Unix(0, 0).UTC()
	layers := []layerRef{
		{diffID: "ctx", desc: "[context foo] load from client", created: t0},
		{diffID: "copy", desc: "[b 1/2] COPY / /", created: t0.Add(time.Second)},
		{diffID: "run", desc: "mount / from exec /bin/sh -c true", created: t0.Add(2 * time.Second)},
	}
	hist := []ocispec.History{{CreatedBy: "COPY / / # buildkit"}, {CreatedBy: "ENV A=1", EmptyLayer: true}, {CreatedBy: "RUN /bin/sh -c true # buildkit"}}
	tests := []struct {
		name   string
		hist   []ocispec.History
		layers []layerRef
		epoch  *time.Time
		want   []string // created_by of the entries after hist
		when   []time.Time
	}{
		{name: "every layer has an entry", hist: hist, layers: layers[1:]},
		{name: "one layer without", hist: hist, layers: layers, want: []string{"mount / from exec /bin/sh -c true"}, when: []time.Time{t0.Add(2 * time.Second)}},
		{name: "with an epoch", hist: hist, layers: layers, epoch: &epoch, want: []string{"mount / from exec /bin/sh -c true"}, when: []time.Time{epoch}},
		{name: "no description", hist: nil, layers: []layerRef{{diffID: "x", created: t0}}, want: []string{"created by buildkit"}, when: []time.Time{t0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := historyForLayers(tt.hist, tt.layers, tt.epoch)
			if len(got) != len(tt.hist)+len(tt.want) {
				t.Fatalf("%d entries, want %d", len(got), len(tt.hist)+len(tt.want))
			}
			for i, w := range tt.want {
				h := got[len(tt.hist)+i]
				if h.CreatedBy != w || h.Comment != "buildkit.exporter.image.v0" || h.EmptyLayer || h.Created == nil || !h.Created.Equal(tt.when[i]) {
					t.Errorf("entry %d: %+v, want %q created %s with the exporter's comment", i, h, w, tt.when[i])
				}
			}
		})
	}
}
