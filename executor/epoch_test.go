package executor

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
)

func tarOf(t *testing.T, gz bool, files map[string]time.Time) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w interface {
		Write([]byte) (int, error)
		Close() error
	} = nopWriteCloser{&buf}
	if gz {
		w = gzip.NewWriter(&buf)
	}
	tw := tar.NewWriter(w)
	for name, tm := range files {
		typ := byte(tar.TypeReg)
		if name[len(name)-1] == '/' {
			typ = tar.TypeDir
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: typ, Mode: 0o644, ModTime: tm}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type nopWriteCloser struct{ *bytes.Buffer }

func (nopWriteCloser) Close() error { return nil }

func TestSourceEpoch(t *testing.T) {
	t1 := time.Unix(1700000601, 0).UTC()
	t2 := time.Unix(1700000700, 0).UTC()
	files := map[string]time.Time{"a": t1, "b": t2.Add(-time.Hour), "dir/": t2.Add(time.Hour)}
	tests := []struct {
		name         string
		body         []byte
		lastModified string
		want         *time.Time
	}{
		{"last-modified wins", tarOf(t, false, files), t2.Format(http.TimeFormat), &t2},
		{"newest regular file of a tar", tarOf(t, false, files), "", &t1},
		{"newest regular file of a tar.gz", tarOf(t, true, files), "", &t1},
		{"not an archive", []byte("plain text"), "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if tt.lastModified != "" {
					w.Header().Set("Last-Modified", tt.lastModified)
				}
				_, _ = w.Write(tt.body)
			}))
			defer srv.Close()
			got, err := SourceEpoch(t.Context(), srv.Client(), t.TempDir(), srv.URL+"/src.tar", "")
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tt.want == nil) || (got != nil && !got.Equal(*tt.want)) {
				t.Errorf("epoch = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("checksum mismatch", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("x")) }))
		defer srv.Close()
		if _, err := SourceEpoch(t.Context(), srv.Client(), t.TempDir(), srv.URL, "sha256:0000000000000000000000000000000000000000000000000000000000000000"); err == nil {
			t.Fatal("no error for a wrong checksum")
		}
	})
}

// With SOURCE_DATE_EPOCH every history entry the build adds has the epoch
// as its time, metadata-only ones included, whatever the base image's
// times (BuildKit's frontend writes the epoch into each).
func TestHistoryEpoch(t *testing.T) {
	epoch := time.Unix(1000, 0).UTC()
	baseTime := time.Unix(5000, 0).UTC()
	for _, tt := range []struct {
		name  string
		epoch *time.Time
		want  time.Time
	}{
		{"epoch", &epoch, epoch},
		{"no epoch: the newest time so far", nil, baseTime},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &stageState{img: dockerspec.DockerOCIImage{}, created: baseTime, epoch: tt.epoch}
			s.history("ENV A=1", true, time.Time{})
			s.history("RUN x # buildkit", false, epoch)
			// Without an epoch the ENV has no time of its own: the image
			// gives it the RUN's, the newest time so far.
			for i, h := range fillHistoryTimes(s.img.History) {
				if h.Created == nil || !h.Created.Equal(tt.want) {
					t.Errorf("history[%d] created %v, want %v", i, h.Created, tt.want)
				}
			}
		})
	}
}
