package exporter

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestClampConfig: SOURCE_DATE_EPOCH applied to a config as BuildKit's
// exporter applies it — the history entries equal to the base image's
// leading ones keep their times (buildkit#4614), even after the epoch;
// the others are clamped (or given the epoch when they have no time);
// the config's created time is then the last entry's; members are
// encoded as BuildKit encodes them.
func TestClampConfig(t *testing.T) {
	epoch := time.Unix(1700000000, 0).UTC()
	before := "2020-01-01T00:00:00Z"
	after := "2030-01-01T00:00:00Z"
	base := []v1.History{
		{Created: v1.Time{Time: mustTime(t, after)}, CreatedBy: "ADD rootfs /"},
		{Created: v1.Time{Time: mustTime(t, after)}, CreatedBy: "CMD sh", EmptyLayer: true},
	}
	baseJSON := `{"created":"` + after + `","created_by":"ADD rootfs /"},{"created":"` + after + `","created_by":"CMD sh","empty_layer":true}`
	for _, tc := range []struct {
		name, history, created string
		base                   []v1.History
		wantHistory            string
		wantCreated            string
	}{{
		name:        "base kept, new entries clamped",
		history:     `[` + baseJSON + `,{"created":"` + after + `","created_by":"RUN x"},{"created_by":"ENV a=b","empty_layer":true}]`,
		created:     after,
		base:        base,
		wantHistory: `[` + baseJSON + `,{"created":"2023-11-14T22:13:20Z","created_by":"RUN x"},{"created":"2023-11-14T22:13:20Z","created_by":"ENV a=b","empty_layer":true}]`,
		wantCreated: `"2023-11-14T22:13:20Z"`,
	}, {
		name:        "FROM only: the base's last time, after the epoch",
		history:     `[` + baseJSON + `]`,
		created:     epoch.Format(time.RFC3339),
		base:        base,
		wantHistory: `[` + baseJSON + `]`,
		wantCreated: `"` + after + `"`,
	}, {
		name:        "a time before the epoch stays",
		history:     `[` + baseJSON + `,{"created":"` + before + `","created_by":"RUN x"}]`,
		created:     after,
		base:        base,
		wantHistory: `[` + baseJSON + `,{"created":"` + before + `","created_by":"RUN x"}]`,
		wantCreated: `"` + before + `"`,
	}, {
		name:        "diverged from the first entry: all clamped",
		history:     `[{"created":"` + after + `","created_by":"ADD other /"},{"created":"` + after + `","created_by":"CMD sh","empty_layer":true}]`,
		created:     after,
		base:        base,
		wantHistory: `[{"created":"2023-11-14T22:13:20Z","created_by":"ADD other /"},{"created":"2023-11-14T22:13:20Z","created_by":"CMD sh","empty_layer":true}]`,
		wantCreated: `"2023-11-14T22:13:20Z"`,
	}, {
		name:        "no base: all clamped",
		history:     `[` + baseJSON + `]`,
		created:     after,
		wantHistory: `[{"created":"2023-11-14T22:13:20Z","created_by":"ADD rootfs /"},{"created":"2023-11-14T22:13:20Z","created_by":"CMD sh","empty_layer":true}]`,
		wantCreated: `"2023-11-14T22:13:20Z"`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			raw := `{"architecture":"amd64","created":"` + tc.created + `","history":` + tc.history + `,"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`
			out, err := clampConfig([]byte(raw), nil, tc.base, epoch)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(out, &m); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.wantHistory, string(m["history"])); diff != "" {
				t.Errorf("history (-want +got):\n%s", diff)
			}
			if got := string(m["created"]); got != tc.wantCreated {
				t.Errorf("created = %s, want %s", got, tc.wantCreated)
			}
			if got := string(m["rootfs"]); got != `{"type":"layers","diff_ids":[]}` {
				t.Errorf("rootfs = %s, want BuildKit's member order", got)
			}
		})
	}
	// Without history, created is clamped.
	out, err := clampConfig([]byte(`{"created":"`+after+`"}`), nil, nil, epoch)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if got := string(m["created"]); got != `"2023-11-14T22:13:20Z"` {
		t.Errorf("created without history = %s, want the epoch", got)
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}
