package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/builder-dev/builder/fixtures"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/builder-dev/builder/internal/testenv"
)

// Issue "Production reliability", section 3: with SOURCE_DATE_EPOCH set,
// two builds of the same Dockerfile and context on two fresh roots give
// the same image digest, whatever the machine: umask, wall clock, root
// path, context path and mtimes, --no-cache, snapshotter, CPUs.

const reproEpoch = "1700000000"

// reproDockerfile exercises everything the builder creates on its own:
// WORKDIR of new nested directories, the parents of COPY/ADD destinations
// (with and without --chown/--chmod, files and directories, --parents,
// a local tar, a heredoc, COPY --from), RUN's /tmp and files and
// directories a RUN makes, and the mount points of RUN --mount targets
// that do not exist in the base. The RUNs record the modes they see of
// what the builder made (stat without times, so the content itself is
// reproducible) and the sandbox's identity (umask, hostname, /etc files).
const reproDockerfile = `# syntax=docker/dockerfile:1
FROM busybox:fixture AS build
ARG V=x
ENV A=1 B="two words"
LABEL org.example.stage=build
WORKDIR /work/deep/nested
RUN mkdir -p out/a/b && echo "$V" > out/a/b/f && mkdir out/plain && touch out/plain/empty && \
    echo tmp > /tmp/t && cat /tmp/t > out/fromtmp && umask > out/umask && \
    stat -c '%a %u:%g %n' /tmp /work /work/deep /work/deep/nested > out/modes
RUN <<EOF
set -e
mkdir -p /hd/x/y
echo heredoc > /hd/x/y/f
stat -c '%a %n' /hd /hd/x /hd/x/y /hd/x/y/f > /hd/modes
EOF

FROM busybox:fixture AS other
RUN mkdir -p /o/p && echo other > /o/p/f && sleep 0.2

FROM busybox:fixture
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/home/app
LABEL a=b c=d
WORKDIR /app/a/b/c
COPY f.txt /dst/new/nested/
COPY --chown=1000:1000 f.txt /dst/owned/new/
COPY --chmod=0640 f.txt /dst/chmod/new/f
COPY --chown=1:1 --chmod=u=rwx,go=rx dir/ /dst/dir/new/
COPY dir /dst/dirnoslash/x/
COPY --parents dir/./sub/g.txt /parents/new/
COPY --parents dir/sub/g.txt /parents/full/
ADD f.txt /add/new/nested/
ADD --chown=2:2 dir/ /add/dir/new/
ADD a.tar /add/tar/new/
COPY --from=build /work/deep/nested/out /from/build/new/
COPY --from=build /hd /from/hd/
COPY --from=other /o /from/other/new/
COPY <<EOF /heredoc/new/file
content
EOF
COPY --link f.txt /link/new/nested/
COPY --link --chown=3:3 dir/ /link/dir/new/
ADD {{URL}}/dated /url/new/dated
ADD {{URL}}/undated /url/new/
ADD a.tar.gz /add/targz/new/
RUN --mount=type=cache,target=/mnt/cache/new,id=repro \
    --mount=type=bind,target=/mnt/bind/new,source=dir \
    --mount=type=tmpfs,target=/mnt/tmpfs/new \
    --mount=type=secret,id=s,target=/mnt/secret/new/s \
    mkdir -p /res/out && ls /mnt/bind/new > /res/out/bindls && wc -c < /mnt/secret/new/s > /res/out/secretlen && \
    touch /mnt/cache/new/x /mnt/tmpfs/new/x && echo t > /tmp/x && umask > /res/out/umask && \
    stat -c '%a %u:%g %n' / /tmp /mnt /mnt/cache /mnt/cache/new /mnt/bind /mnt/tmpfs /mnt/secret /mnt/secret/new /app /app/a /app/a/b /app/a/b/c > /res/out/modes && \
    hostname > /res/out/hostname && cat /etc/hosts > /res/out/etc
RUN seq 1 600000 > /big && mkdir /made && echo hi > /made/file && ln -s file /made/link && mkfifo /made/fifo && \
    mkdir -p /made/p/q/r && cp /made/file /made/p/q/r/copy && ln /made/file /made/hard
USER 1000
WORKDIR /home/u/new
VOLUME /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s CMD true
SHELL ["/bin/sh", "-c"]
ONBUILD RUN true
EXPOSE 80
ENTRYPOINT ["sh"]
CMD ["-c", "true"]
`

// reproConfig is one point of the matrix.
type reproConfig struct {
	name       string
	root       string   // --root; "" = a fresh one
	baseCtx    string   // the base image's context; "" = the shared one
	ctx        string   // the build context; "" = the reference one
	umask      string   // run the builder under this umask ("" = 022)
	env        []string // extra environment of the builder
	flags      []string // extra build flags (base image and build)
	buildFlags []string // extra build flags (the build only)
	epochArg   bool     // SOURCE_DATE_EPOCH as --build-arg instead of env
	taskset    bool     // pin the builder to one CPU
	after      func()   // run before building (e.g. sleep)
}

// reproResult is what a build gave.
type reproResult struct {
	iid   string
	tar   string
	oci   string // sha256 of the -o type=oci archive (gzip layers)
	dtar  string // sha256 of the -o type=docker archive
	root  string
	err   error
	extra string
}

type reproSuite struct {
	t       *testing.T
	dir     string
	baseCtx string
	ctx     string
	secret  string
	url     string // of the server ADD downloads from
}

func TestE2EReproducibleMatrix(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	s := &reproSuite{t: t, dir: dir}
	// ADD <url>: one file with a Last-Modified after the epoch, one
	// without (its mtime is the download time, clamped).
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/dated":
			w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
			io.WriteString(w, "dated\n") //nolint:errcheck // test server
		case "/undated":
			io.WriteString(w, "undated\n") //nolint:errcheck // test server
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	s.url = srv.URL
	s.baseCtx = filepath.Join(dir, "base")
	if err := fixtures.BusyboxRootfs(context.Background(), filepath.Join(s.baseCtx, "rootfs")); err != nil {
		t.Fatalf("busybox rootfs: %v", err)
	}
	writeFile(t, filepath.Join(s.baseCtx, "Dockerfile"), "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n")
	s.ctx = filepath.Join(dir, "ctx")
	s.makeContext(s.ctx)
	s.secret = filepath.Join(dir, "secret")
	writeFile(t, s.secret, "s3cret\n")

	// The reference: a fresh root, umask 022, every CPU, the default
	// snapshotter, SOURCE_DATE_EPOCH in the environment.
	ref := s.build(reproConfig{name: "reference"})
	if ref.err != nil {
		t.Fatal(ref.err)
	}
	refImg := readReproImage(t, ref.tar)
	s.checkContent(refImg)

	// The context elsewhere, its files with other mtimes (all after the
	// epoch, which clamps them; an older mtime is kept, as BuildKit's
	// rewrite-timestamp does) and another owner.
	movedCtx := filepath.Join(dir, "elsewhere", "a", "much", "longer", "context-path")
	s.makeContext(movedCtx)
	touchTree(t, movedCtx, time.Now().Add(-time.Hour))
	chownTree(t, movedCtx, 1234, 1234) // another checkout's owner: COPY makes it 0:0
	movedBase := filepath.Join(dir, "elsewhere", "base")
	if err := fixtures.CopyTree(context.Background(), s.baseCtx, movedBase); err != nil {
		t.Fatal(err)
	}
	touchTree(t, movedBase, time.Now().Add(24*time.Hour))

	overlay := "overlay"
	if !overlayUsable(t, ref) {
		overlay = "auto"
	}
	variants := []reproConfig{
		{name: "build-arg", epochArg: true},
		{name: "umask-077", umask: "077"},
		{name: "umask-002", umask: "002"},
		{name: "later-clock", after: func() { time.Sleep(1100 * time.Millisecond) }},
		{name: "root-path", root: filepath.Join(dir, "other", "deeper", "store-root-with-a-long-name")},
		{name: "context-path-mtimes", ctx: movedCtx, baseCtx: movedBase},
		{name: "no-cache-warm-root", root: ref.root, buildFlags: []string{"--no-cache"}},
		{name: "snapshotter-copy", flags: []string{"--snapshotter", "copy"}},
		{name: "snapshotter-overlay", flags: []string{"--snapshotter", overlay}},
		{name: "one-cpu", env: []string{"GOMAXPROCS=1"}, taskset: true},
	}
	results := make([]reproResult, len(variants))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 3)
	for i, v := range variants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if v.after != nil {
				v.after()
			}
			results[i] = s.build(v)
		}()
	}
	wg.Wait()
	for i, v := range variants {
		r := results[i]
		if r.err != nil {
			t.Errorf("%s: %v", v.name, r.err)
			continue
		}
		if r.iid == ref.iid {
			if r.dtar != ref.dtar {
				t.Errorf("%s: same image, but the docker archive differs", v.name)
			}
			if r.oci != ref.oci {
				t.Errorf("%s: same image, but the OCI archive (gzip layers) differs", v.name)
			}
			continue
		}
		img := readReproImage(t, r.tar)
		diffs := diffReproImages(refImg, img)
		if len(diffs) > 20 {
			diffs = append(diffs[:20], fmt.Sprintf("... and %d more", len(diffs)-20))
		}
		t.Errorf("%s: image %s, reference %s:\n  %s", v.name, r.iid, ref.iid, strings.Join(diffs, "\n  "))
	}
}

// makeContext writes the build context: the Dockerfile, a file, a
// directory tree and a tar.
func (s *reproSuite) makeContext(d string) {
	t := s.t
	writeFile(t, filepath.Join(d, "Dockerfile"), strings.ReplaceAll(reproDockerfile, "{{URL}}", s.url))
	writeFile(t, filepath.Join(d, "f.txt"), "file\n")
	writeFile(t, filepath.Join(d, "dir", "a.txt"), "a\n")
	writeFile(t, filepath.Join(d, "dir", "sub", "g.txt"), "g\n")
	writeFile(t, filepath.Join(d, "dir", "sub", "deeper", "h.txt"), "h\n")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(1600000000, 0)
	for _, h := range []*tar.Header{
		{Name: "t/", Typeflag: tar.TypeDir, Mode: 0o750, ModTime: mt},
		{Name: "t/x", Typeflag: tar.TypeReg, Mode: 0o640, Size: 2, ModTime: mt},
		// no entry for u/ itself: its parent is made by the builder
		{Name: "u/v/w", Typeflag: tar.TypeReg, Mode: 0o600, Size: 2, ModTime: mt},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("x\n")) //nolint:errcheck // bytes.Buffer
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "a.tar"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(buf.Bytes()) //nolint:errcheck // bytes.Buffer
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "a.tar.gz"), gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// touchTree sets the mtime and atime of everything under d.
func touchTree(t *testing.T, d string, when time.Time) {
	t.Helper()
	err := filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.Type()&fs.ModeSymlink != 0 {
			return err
		}
		return os.Chtimes(p, when, when)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// chownTree sets the owner of everything under d.
func chownTree(t *testing.T, d string, uid, gid int) {
	t.Helper()
	err := filepath.WalkDir(d, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// overlayUsable reports whether the reference build used overlayfs.
func overlayUsable(t *testing.T, ref reproResult) bool {
	return !strings.Contains(ref.extra, "copy snapshotter")
}

// build runs the base image build and the build of c on its root.
func (s *reproSuite) build(c reproConfig) reproResult {
	r := reproResult{root: c.root}
	fresh := r.root == "" || !dirExists(r.root)
	out := filepath.Join(s.dir, "out-"+c.name)
	if err := os.MkdirAll(out, 0o755); err != nil {
		r.err = err
		return r
	}
	if r.root == "" {
		r.root = filepath.Join(s.dir, "roots", c.name)
	}
	baseCtx, ctx := s.baseCtx, s.ctx
	if c.baseCtx != "" {
		baseCtx = c.baseCtx
	}
	if c.ctx != "" {
		ctx = c.ctx
	}
	epoch := []string{"SOURCE_DATE_EPOCH=" + reproEpoch}
	var epochFlags []string
	if c.epochArg {
		epoch, epochFlags = nil, []string{"--build-arg", "SOURCE_DATE_EPOCH=" + reproEpoch}
	}
	env := append(slices.Clone(epoch), c.env...)
	if fresh {
		args := append(append([]string{"build", "--progress", "plain", "-t", "busybox:fixture"}, c.flags...), epochFlags...)
		if _, stderr, err := s.runBuilder(c, r.root, env, append(args, baseCtx)...); err != nil {
			r.err = fmt.Errorf("base image: %v\n%s", err, stderr)
			return r
		}
	}
	r.tar = filepath.Join(out, "image.tar")
	iidFile := filepath.Join(out, "iid")
	ociFile := filepath.Join(out, "image.oci.tar")
	args := []string{"build", "--progress", "plain", "--iidfile", iidFile, "-o", "type=docker,dest=" + r.tar, "-o", "type=oci,dest=" + ociFile,
		"--secret", "id=s,src=" + s.secret, "--build-arg", "V=value"}
	args = append(append(append(args, c.flags...), c.buildFlags...), epochFlags...)
	_, stderr, err := s.runBuilder(c, r.root, env, append(args, ctx)...)
	r.extra = stderr
	if err != nil {
		r.err = fmt.Errorf("build: %v\n%s", err, stderr)
		return r
	}
	b, err := os.ReadFile(iidFile)
	if err != nil {
		r.err = err
		return r
	}
	r.iid = strings.TrimSpace(string(b))
	if r.dtar, r.err = sha256File(r.tar); r.err == nil {
		r.oci, r.err = sha256File(ociFile)
	}
	return r
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// runBuilder runs the binary as configuration c asks: under its umask,
// pinned to CPU 0, with its environment.
func (s *reproSuite) runBuilder(c reproConfig, root string, env []string, args ...string) (string, string, error) {
	argv := append([]string{builderBin, "--root", root}, args...)
	if c.taskset {
		if p, err := exec.LookPath("taskset"); err == nil {
			argv = append([]string{p, "-c", "0"}, argv...)
		}
	}
	umask := c.umask
	if umask == "" {
		umask = "022"
	}
	argv = append([]string{"/bin/sh", "-c", `umask "$0" && exec "$@"`, umask}, argv...)
	ctx, cancel := context.WithTimeout(s.t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// checkContent checks what the reference RUNs saw: the fixed modes the
// builder gives what it creates and the sandbox's fixed identity.
func (s *reproSuite) checkContent(img *reproImage) {
	t := s.t
	want := map[string]string{
		"res/out/umask":        "0022\n",
		"res/out/secretlen":    "7\n",
		"res/out/modes":        "755 0:0 /\n1777 0:0 /tmp\n755 0:0 /mnt\n755 0:0 /mnt/cache\n755 0:0 /mnt/cache/new\n755 0:0 /mnt/bind\n755 0:0 /mnt/tmpfs\n755 0:0 /mnt/secret\n755 0:0 /mnt/secret/new\n755 0:0 /app\n755 0:0 /app/a\n755 0:0 /app/a/b\n755 0:0 /app/a/b/c\n",
		"from/build/new/umask": "0022\n",
		"from/build/new/modes": "1777 0:0 /tmp\n755 0:0 /work\n755 0:0 /work/deep\n755 0:0 /work/deep/nested\n",
		"from/hd/modes":        "755 /hd\n755 /hd/x\n755 /hd/x/y\n644 /hd/x/y/f\n",
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		e, ok := img.find(name)
		if !ok {
			t.Errorf("reference image lacks %s", name)
			continue
		}
		if got := string(e.content); got != want[name] {
			t.Errorf("%s = %q, want %q", name, got, want[name])
		}
	}
	// Directories the builder makes are 0755, whatever they hold, but
	// those an octal COPY --chmod makes for its destination, which get its
	// mode as in BuildKit (testCopyChmod).
	for name, mode := range map[string]int64{"dst/chmod": 0o640, "dst/chmod/new": 0o640} {
		e, ok := img.find(name)
		if !ok {
			t.Errorf("reference image lacks %s", name)
		} else if e.hdr.Typeflag != tar.TypeDir || e.hdr.Mode&0o7777 != mode {
			t.Errorf("%s: type %c mode %o, want a %04o directory", name, e.hdr.Typeflag, e.hdr.Mode&0o7777, mode)
		}
	}
	for _, name := range []string{"app", "app/a", "app/a/b/c", "dst", "dst/new", "dst/new/nested", "dst/owned", "dst/owned/new",
		"dst/dir", "dst/dir/new", "dst/dirnoslash/x", "parents/new", "add/new/nested",
		"add/dir", "add/tar/new", "add/tar/new/u", "add/targz/new/u", "link", "link/new/nested", "link/dir/new", "url/new", "from/other/new", "from/build/new", "from/hd", "heredoc/new", "home/u/new", "res/out"} {
		e, ok := img.find(name)
		if !ok {
			t.Errorf("reference image lacks %s", name)
			continue
		}
		if e.hdr.Typeflag != tar.TypeDir || e.hdr.Mode&0o7777 != 0o755 {
			t.Errorf("%s: type %c mode %o, want a 0755 directory", name, e.hdr.Typeflag, e.hdr.Mode&0o7777)
		}
	}
	for _, name := range []string{"mnt", "mnt/cache", "mnt/secret"} {
		if _, ok := img.find(name); ok {
			t.Errorf("mount stub %s left in a layer", name)
		}
	}
}

// reproImage is a docker-save tar read back: its manifest digest, raw
// config and layers' entries in tar order.
type reproImage struct {
	digest string
	config []byte
	layers [][]reproEntry
}

type reproEntry struct {
	hdr     *tar.Header
	content []byte // up to 64 KiB
	sha     string
}

// find returns the last entry named name (relative, cleaned) of any layer.
func (img *reproImage) find(name string) (reproEntry, bool) {
	for i := len(img.layers) - 1; i >= 0; i-- {
		for _, e := range img.layers[i] {
			if strings.TrimSuffix(strings.TrimPrefix(e.hdr.Name, "./"), "/") == name {
				return e, true
			}
		}
	}
	return reproEntry{}, false
}

func readReproImage(t *testing.T, p string) *reproImage {
	t.Helper()
	img, err := tarball.ImageFromPath(p, nil)
	if err != nil {
		t.Fatalf("read image %s: %v", p, err)
	}
	out := &reproImage{}
	if out.config, err = img.RawConfigFile(); err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		var entries []reproEntry
		tr := tar.NewReader(rc)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("layer %d of %s: %v", i, p, err)
			}
			h := sha256.New()
			var head bytes.Buffer
			if _, err := io.Copy(io.MultiWriter(h, &limitedBuffer{&head, 64 << 10}), tr); err != nil {
				t.Fatal(err)
			}
			entries = append(entries, reproEntry{hdr: hdr, content: head.Bytes(), sha: hex.EncodeToString(h.Sum(nil))})
		}
		rc.Close()
		out.layers = append(out.layers, entries)
	}
	return out
}

type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// diffReproImages says, layer by layer and entry by entry, how b differs
// from a: entry order, tar header fields (mode, owner, times, xattrs,
// format), content; then config fields.
func diffReproImages(a, b *reproImage) []string {
	var out []string
	if len(a.layers) != len(b.layers) {
		out = append(out, fmt.Sprintf("%d layers, reference %d", len(b.layers), len(a.layers)))
	}
	for i := range min(len(a.layers), len(b.layers)) {
		la, lb := a.layers[i], b.layers[i]
		byName := func(l []reproEntry) map[string]reproEntry {
			m := map[string]reproEntry{}
			for _, e := range l {
				m[e.hdr.Name] = e
			}
			return m
		}
		ma, mb := byName(la), byName(lb)
		for _, n := range slices.Sorted(maps.Keys(ma)) {
			if _, ok := mb[n]; !ok {
				out = append(out, fmt.Sprintf("layer %d: %s: only in the reference", i, n))
			}
		}
		for _, n := range slices.Sorted(maps.Keys(mb)) {
			ea, ok := ma[n]
			if !ok {
				out = append(out, fmt.Sprintf("layer %d: %s: not in the reference", i, n))
				continue
			}
			for _, d := range diffHeaders(ea, mb[n]) {
				out = append(out, fmt.Sprintf("layer %d: %s: %s", i, n, d))
			}
		}
		if len(out) == 0 {
			for j := range min(len(la), len(lb)) {
				if la[j].hdr.Name != lb[j].hdr.Name {
					out = append(out, fmt.Sprintf("layer %d: entry %d is %s, reference %s (order)", i, j, lb[j].hdr.Name, la[j].hdr.Name))
					break
				}
			}
		}
	}
	var ca, cb map[string]any
	if json.Unmarshal(a.config, &ca) == nil && json.Unmarshal(b.config, &cb) == nil {
		for _, k := range slices.Sorted(maps.Keys(cb)) {
			ja, _ := json.Marshal(ca[k])
			jb, _ := json.Marshal(cb[k])
			if !bytes.Equal(ja, jb) {
				out = append(out, fmt.Sprintf("config.%s: %s, reference %s", k, jb, ja))
			}
		}
	}
	if len(out) == 0 && !bytes.Equal(a.config, b.config) {
		out = append(out, fmt.Sprintf("config bytes differ:\n%s\nreference:\n%s", b.config, a.config))
	}
	if len(out) == 0 {
		out = append(out, "same entries and config: the tar bytes differ (padding, header format or order)")
	}
	return out
}

func diffHeaders(a, b reproEntry) []string {
	ha, hb := a.hdr, b.hdr
	var out []string
	field := func(name string, va, vb any) {
		if fmt.Sprint(va) != fmt.Sprint(vb) {
			out = append(out, fmt.Sprintf("%s %v, reference %v", name, vb, va))
		}
	}
	field("type", string(ha.Typeflag), string(hb.Typeflag))
	field("mode", fmt.Sprintf("%o", ha.Mode), fmt.Sprintf("%o", hb.Mode))
	field("uid", ha.Uid, hb.Uid)
	field("gid", ha.Gid, hb.Gid)
	field("uname", ha.Uname, hb.Uname)
	field("gname", ha.Gname, hb.Gname)
	field("size", ha.Size, hb.Size)
	field("mtime", ha.ModTime.UTC(), hb.ModTime.UTC())
	field("atime", ha.AccessTime.UTC(), hb.AccessTime.UTC())
	field("ctime", ha.ChangeTime.UTC(), hb.ChangeTime.UTC())
	field("linkname", ha.Linkname, hb.Linkname)
	field("dev", fmt.Sprint(ha.Devmajor, ":", ha.Devminor), fmt.Sprint(hb.Devmajor, ":", hb.Devminor))
	field("format", ha.Format, hb.Format)
	field("pax", fmt.Sprint(ha.PAXRecords), fmt.Sprint(hb.PAXRecords))
	if a.sha != b.sha {
		out = append(out, fmt.Sprintf("content %q, reference %q", b.content, a.content))
	}
	return out
}

// TestE2ESourceDateEpochEnvIsBuildArg: SOURCE_DATE_EPOCH in the
// environment is also the build arg SOURCE_DATE_EPOCH, as buildx passes
// it, so a Dockerfile that declares ARG SOURCE_DATE_EPOCH gives the same
// image whichever way the epoch is given.
func TestE2ESourceDateEpochEnvIsBuildArg(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nARG SOURCE_DATE_EPOCH\nRUN echo \"epoch=$SOURCE_DATE_EPOCH\" > /epoch\n", nil)
	var ids []string
	for i, how := range [][]string{{"env"}, {"--build-arg", "SOURCE_DATE_EPOCH=" + reproEpoch}} {
		iid := filepath.Join(e.dir, fmt.Sprintf("iid-%d", i))
		args := []string{"build", "--progress", "plain", "--iidfile", iid}
		var env []string
		if how[0] == "env" {
			env = []string{"SOURCE_DATE_EPOCH=" + reproEpoch}
		} else {
			args = append(args, how...)
		}
		args = append(args, ctx)
		_, errOut := e.mustRunEnv(env, args...)
		if strings.Contains(errOut, "SOURCE_DATE_EPOCH was not consumed") {
			t.Errorf("SOURCE_DATE_EPOCH reported as an unused build arg:\n%s", errOut)
		}
		b, err := os.ReadFile(iid)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, string(b))
	}
	if ids[0] != ids[1] {
		t.Errorf("SOURCE_DATE_EPOCH in the environment gave %s, as --build-arg %s", ids[0], ids[1])
	}
}

// TestE2EUmaskUserOutputs: a build under umask 077 writes what is the
// user's with the user's umask (a --cache-to layout) or the fixed modes
// it always had (archives 0644, --iidfile 0600), while the image content
// (here a -o type=local tree) keeps the modes Docker gives.
func TestE2EUmaskUserOutputs(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nWORKDIR /w/x\nRUN mkdir -p /r/s && echo x > /r/s/f\n", nil)
	out := filepath.Join(e.dir, "out")
	cmd := exec.CommandContext(t.Context(), "/bin/sh", "-c", `umask 077 && exec "$@"`, "sh",
		builderBin, "--root", e.root, "build", "--progress", "plain",
		"--iidfile", filepath.Join(out, "iid"),
		"-o", "type=docker,dest="+filepath.Join(out, "img.tar"),
		"-o", "type=local,dest="+filepath.Join(out, "local"),
		"--cache-to", "type=local,dest="+filepath.Join(out, "cache"), ctx)
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build under umask 077: %v\n%s", err, b)
	}
	want := map[string]os.FileMode{
		"iid":                0o600,
		"img.tar":            0o644,
		"cache":              0o700,
		"cache/blobs":        0o700,
		"local/w/x":          0o755,
		"local/r/s":          0o755,
		"local/r/s/f":        0o644,
		"local/bin/busybox":  0o755,
		"cache/index.json":   0,
		"cache/blobs/sha256": 0o700,
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		fi, err := os.Stat(filepath.Join(out, name))
		if err != nil {
			t.Error(err)
			continue
		}
		m := fi.Mode().Perm()
		if name == "cache/index.json" {
			if m&0o077 != 0 {
				t.Errorf("%s: mode %o: the user's umask 077 lets no group or other bit through", name, m)
			}
			continue
		}
		if m != want[name] {
			t.Errorf("%s: mode %o, want %o", name, m, want[name])
		}
	}
}
