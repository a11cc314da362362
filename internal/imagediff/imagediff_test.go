package imagediff

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/google/go-cmp/cmp"
)

type tarEntry struct {
	name, body, link string
	typ              byte
	mode             int64
	uid              int
	mtime            int64
}

func layerTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: mode, Uid: e.uid, Linkname: e.link,
			Size: int64(len(e.body)), ModTime: time.Unix(e.mtime, 0)}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readEntries(t *testing.T, data []byte) map[string]Entry {
	t.Helper()
	m, err := ReadLayer(t.Context(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestReadLayerAndDiffEntries(t *testing.T) {
	a := readEntries(t, layerTar(t,
		tarEntry{name: "app/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "app/main.go", body: "one\n"},
		tarEntry{name: "app/same", body: "x"},
		tarEntry{name: "app/run.sh", body: "#!", mode: 0o644},
		tarEntry{name: "app/link", typ: tar.TypeSymlink, link: "main.go"},
		tarEntry{name: "gone.txt", body: "bye"},
		tarEntry{name: "stamp", body: "t1", mtime: 100},
	))
	b := readEntries(t, layerTar(t,
		tarEntry{name: "./app/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "app/main.go", body: "two!\n"},
		tarEntry{name: "app/same", body: "x"},
		tarEntry{name: "app/run.sh", body: "#!", mode: 0o755, uid: 1000},
		tarEntry{name: "app/link", typ: tar.TypeSymlink, link: "other.go"},
		tarEntry{name: "app/.wh.old", body: ""},
		tarEntry{name: "etc/.wh..wh..opq", body: ""},
		tarEntry{name: "stamp", body: "t2", mtime: 200},
	))
	if e := b["/app/old"]; e.Type != "whiteout" {
		t.Errorf("whiteout entry: %+v", e)
	}
	if e := a["/app/main.go"]; e.Digest != "sha256:2c8b08da5ce60398e1f19af0e5dccc744df274b826abe585eaba68c525434806" || e.Size != 4 {
		t.Errorf("file entry: %+v", e)
	}
	var got []string
	for _, c := range DiffEntries(a, b) {
		s := c.Change + " " + c.Path + " " + c.Type
		for _, f := range c.Fields {
			s += fmt.Sprintf(" [%s %s→%s]", f.Field, clipped(f.A), clipped(f.B))
		}
		got = append(got, s)
	}
	want := []string{
		"changed /app/link symlink [link main.go→other.go]",
		"changed /app/main.go file [size 4→5] [digest sha256:2c8b→sha256:dd18]",
		"added /app/old whiteout",
		"changed /app/run.sh file [mode 0644→0755] [owner 0:0→1000:0]",
		"added /etc/.wh..wh..opq opaque",
		"removed /gone.txt file",
		"changed /stamp file [digest sha256:628b→sha256:c444] [mtime 1970-01-01T00:01:40Z→1970-01-01T00:03:20Z]",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DiffEntries (-want +got):\n%s", diff)
	}
}

func clipped(s string) string {
	if strings.HasPrefix(s, "sha256:") {
		return s[:11]
	}
	return s
}

func TestAlign(t *testing.T) {
	mk := func(names ...string) []Layer {
		var out []Layer
		for _, n := range names {
			out = append(out, Layer{CreatedBy: n})
		}
		return out
	}
	for _, c := range []struct {
		a, b []string
		want string
	}{
		{[]string{"base", "COPY a", "RUN x"}, []string{"base", "COPY a", "RUN x"}, "0-0 1-1 2-2"},
		// A step inserted in B: the others stay paired.
		{[]string{"base", "RUN x"}, []string{"base", "COPY new", "RUN x"}, "0-0 -1-1 1-2"},
		// A step changed text: paired with the one in its place.
		{[]string{"base", "RUN echo 1", "ENV"}, []string{"base", "RUN echo 2", "ENV"}, "0-0 1-1 2-2"},
		{[]string{"base", "RUN a", "RUN b"}, []string{"base"}, "0-0 1--1 2--1"},
	} {
		var got []string
		for _, p := range align(mk(c.a...), mk(c.b...)) {
			got = append(got, fmt.Sprintf("%d-%d", p[0], p[1]))
		}
		if s := strings.Join(got, " "); s != c.want {
			t.Errorf("align(%v, %v) = %s, want %s", c.a, c.b, s, c.want)
		}
	}
}

func TestDiffLayers(t *testing.T) {
	opener := func(data []byte) func() (io.ReadCloser, error) {
		return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	}
	base := layerTar(t, tarEntry{name: "bin/sh", body: "sh"})
	a := []Layer{{DiffID: "sha256:base", CreatedBy: "base", Open: opener(base)},
		{DiffID: "sha256:a1", CreatedBy: "COPY a", Open: opener(layerTar(t, tarEntry{name: "a", body: "1"}))}}
	b := []Layer{{DiffID: "sha256:base", CreatedBy: "base", Open: func() (io.ReadCloser, error) { t.Error("an equal layer was read"); return nil, io.EOF }},
		{DiffID: "sha256:b1", CreatedBy: "COPY a", Open: opener(layerTar(t, tarEntry{name: "a", body: "2"}))},
		{DiffID: "sha256:b2", CreatedBy: "RUN new", Open: opener(layerTar(t, tarEntry{name: "n", body: "n"}))}}
	got, err := DiffLayers(t.Context(), a, b)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, l := range got {
		var files []string
		for _, f := range l.Files {
			files = append(files, f.Change+" "+f.Path)
		}
		s = append(s, fmt.Sprintf("%d/%d %s %s %v", l.IndexA, l.IndexB, l.Status, l.CreatedBy, files))
	}
	want := []string{"1/1 same base []", "2/2 changed COPY a [changed /a]", "0/3 added RUN new [added /n]"}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("DiffLayers (-want +got):\n%s", diff)
	}
}

func TestDiffJSON(t *testing.T) {
	a := `{"created":"2024-01-01T00:00:00Z","config":{"Env":["PATH=/bin","A=1"],"Cmd":["sh"]},"rootfs":{"diff_ids":["x"]},"history":[{"created_by":"a"}]}`
	b := `{"created":"2024-01-02T00:00:00Z","config":{"Env":["PATH=/bin","A=2"],"Labels":{"l":"v"}},"rootfs":{"diff_ids":["y"]},"history":[{"created_by":"a"}]}`
	got, err := DiffJSON([]byte(a), []byte(b), "rootfs")
	if err != nil {
		t.Fatal(err)
	}
	want := []FieldChange{
		{Field: "config.Cmd[0]", A: "sh", B: "unset"},
		{Field: "config.Env[1]", A: "A=1", B: "A=2"},
		{Field: "config.Labels.l", A: "unset", B: "v"},
		{Field: "created", A: "2024-01-01T00:00:00Z", B: "2024-01-02T00:00:00Z"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DiffJSON (-want +got):\n%s", diff)
	}
}

func TestDiffSteps(t *testing.T) {
	in := func(op string, files ...string) *cache.Inputs {
		i := &cache.Inputs{Op: op, Fields: []cache.Field{{Name: "instruction", Value: op}}}
		for _, f := range files {
			p, d, _ := strings.Cut(f, "=")
			i.Files = append(i.Files, cache.FileInput{Path: p, Type: "file", Mode: 0o644, Digest: d})
		}
		return i
	}
	st := func(line int, instr string, parent cache.Key, i *cache.Inputs) cache.StepRecord {
		return cache.StepRecord{Stage: "s", Line: line, Instruction: instr, Key: cache.KeyOf(parent, *i), Inputs: i, Cache: "miss"}
	}
	from := st(1, "FROM busybox", cache.Key{}, in("FROM"))
	copyA := st(2, "COPY src/ /app", from.Key, in("COPY", "src/main.go=sha256:1", "src/util.go=sha256:u"))
	copyB := st(2, "COPY src/ /app", from.Key, in("COPY", "src/main.go=sha256:2", "src/util.go=sha256:u"))
	runA := st(3, "RUN make", copyA.Key, in("RUN"))
	runB := st(3, "RUN make", copyB.Key, in("RUN"))
	extra := st(4, "RUN extra", runB.Key, in("RUN", "x=sha256:x"))
	env := cache.StepRecord{Stage: "s", Line: 5, Instruction: "ENV A=1"} // no key: left out
	explain := func(a, b *cache.Inputs) string { return cache.Explain(a, b) }
	got := DiffSteps([]cache.StepRecord{from, copyA, runA, env}, []cache.StepRecord{from, copyB, runB, extra, env}, explain)
	var s []string
	for _, c := range got {
		s = append(s, fmt.Sprintf("%d/%d %s %s: %s", c.LineA, c.LineB, c.Instruction, c.Status, c.Reason))
	}
	want := []string{
		"1/1 FROM busybox same: ",
		"2/2 COPY src/ /app changed: src/main.go content changed",
		"3/3 RUN make changed: parent step changed (line 2)",
		"0/4 RUN extra added: ",
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("DiffSteps (-want +got):\n%s", diff)
	}
}
