package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/fixtures"
	"github.com/builder-dev/builder/internal/testenv"
)

// rootlessUserEnv names an ordinary user with a subordinate id range for
// the tests that compare its builds with root's (.ci/run creates one).
const rootlessUserEnv = "BUILDER_E2E_ROOTLESS_USER"

// rootlessUser returns the user of $BUILDER_E2E_ROOTLESS_USER (or of
// $BUILDER_E2E_USER); without one the test skips, or fails in CI.
func rootlessUser(t *testing.T) *e2eUser {
	t.Helper()
	testenv.RequireRoot(t)
	name := os.Getenv(rootlessUserEnv)
	if name == "" {
		name = os.Getenv(e2eUserEnv)
	}
	if name == "" {
		testenv.SkipOrFail(t, "$%s names no user with a subordinate id range", rootlessUserEnv)
	}
	return lookupE2EUser(t, name)
}

// newEnvAs is newEnv with builder run by u (nil: root), whatever
// $BUILDER_E2E_USER says; the base image is built with a fixed
// SOURCE_DATE_EPOCH so two envs have the same one.
func newEnvAs(t *testing.T, u *e2eUser) *e2eEnv {
	t.Helper()
	dir := t.TempDir()
	e := &e2eEnv{t: t, root: filepath.Join(dir, "root"), dir: dir, user: u}
	e.share(dir)
	base := filepath.Join(dir, "base")
	if err := fixtures.BusyboxRootfs(context.Background(), filepath.Join(base, "rootfs")); err != nil {
		t.Fatalf("busybox rootfs: %v", err)
	}
	e.write(base, "Dockerfile", "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n")
	e.own(base)
	e.mustRun("build", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", "-t", "busybox:fixture", base)
	return e
}

// rootlessBase is an image only root can build: device nodes, files of
// many owners, setuid and setgid bits, a capability-free xattr-less tree.
// The rootless store gets it as an image tar, as it would from a registry.
const rootlessBase = `FROM busybox:fixture
RUN mkdir -p /devs /srv/www /srv/nobody /opt/app/bin && \
    mknod -m 666 /devs/null c 1 3 && mknod -m 660 /devs/sda b 8 0 && chown 0:6 /devs/sda && \
    echo www > /srv/www/index && chown -R 33:33 /srv/www && \
    echo n > /srv/nobody/f && chown -R 65534:65534 /srv/nobody && \
    cp /bin/busybox /opt/app/bin/suid && chmod 4755 /opt/app/bin/suid && \
    cp /bin/busybox /opt/app/bin/sgid && chown 0:50 /opt/app/bin/sgid && chmod 2755 /opt/app/bin/sgid && \
    echo hl > /opt/app/a && ln /opt/app/a /opt/app/b && \
    mkdir -p /opq/old && echo o > /opq/old/f && echo 1000 > /opt/own && chown 1000:1001 /opt/own
`

// rootlessFixture is a Dockerfile built as root and rootless from the
// same base: the image digests must be equal. subIDs marks those whose RUN
// steps create files of other owners, which a single-id mapping cannot.
type rootlessFixture struct {
	df     string
	subIDs bool
}

var rootlessFixtures = map[string]rootlessFixture{
	"run-changes": {subIDs: true, df: `FROM devbase
RUN rm /opt/app/b && rm -rf /opq && mkdir /opq && echo new > /opq/new && \
    chown 33:33 /opt/own && chmod 600 /devs/null && echo more >> /srv/www/index && \
    mkdir /home/u && chown 1000:1000 /home/u && echo u > /home/u/f && chown 1000:1000 /home/u/f && \
    ln /srv/nobody/f /srv/nobody/g && chmod 4711 /srv/nobody/f && mkfifo /fifo && \
    ln -s /srv/www /www && rm /bin/true
RUN rm -rf /srv/nobody && touch /opt/app/bin/suid
`},
	"run-root": {df: `FROM devbase
RUN rm /opt/app/b && rm -rf /opq && mkdir /opq && echo new > /opq/new && \
    chmod 600 /devs/null && echo more >> /srv/www/index && chmod 4711 /srv/nobody/f && \
    mkfifo /fifo && ln -s /srv/www /www && rm /bin/true && echo x > /opt/app/bin/new
`},
	"copy-owners": {df: `FROM devbase
COPY --chown=33:33 a.txt /srv/www/a.txt
COPY --chown=65534:65534 --chmod=4750 a.txt /opt/nobody
COPY --chown=1000:1001 dir/ /home/dev/
COPY --from=devbase /srv /copied
COPY --from=devbase /devs /copied-devs
`},
	"users": {subIDs: true, df: `FROM devbase
RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && mkdir /data && chown app /data
USER app
RUN echo hi > /data/by-app && id > /data/id
USER 33:33
RUN echo www > /tmp/by-www
`},
}

// TestE2ERootlessSameDigests builds fixtures with files of several owners,
// setuid and setgid bits, device nodes, whiteouts, opaque directories and
// hardlinks as root and as an ordinary user with a subordinate id range:
// the images' digests (SOURCE_DATE_EPOCH) must be the same.
func TestE2ERootlessSameDigests(t *testing.T) {
	testRootlessDigests(t, rootlessUser(t), true)
}

// singleIDUserEnv names an ordinary user without a subordinate id range.
const singleIDUserEnv = "BUILDER_E2E_SINGLEID_USER"

// TestE2ERootlessSingleIDSameDigests: a user without a subordinate range
// (a single-id mapping) still exports what root does for the fixtures
// whose RUN steps make no file of another owner: extracted and copied
// files of every owner, devices, setuid bits.
func TestE2ERootlessSingleIDSameDigests(t *testing.T) {
	testenv.RequireRoot(t)
	name := os.Getenv(singleIDUserEnv)
	if name == "" {
		testenv.SkipOrFail(t, "$%s names no user without a subordinate id range", singleIDUserEnv)
	}
	testRootlessDigests(t, lookupE2EUser(t, name), false)
}

func testRootlessDigests(t *testing.T, u *e2eUser, subIDs bool) {
	root, user := newEnvAs(t, nil), newEnvAs(t, u)
	// The base with devices: built by root, loaded from its tar by both.
	ctx := root.context(rootlessBase, nil)
	root.mustRun("build", "--network", "none", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", "-t", "devbase", ctx)
	baseTar := filepath.Join(user.dir, "devbase.tar")
	root.mustRun("save", "-o", baseTar, "devbase")
	if err := os.Chmod(baseTar, 0o644); err != nil {
		t.Fatal(err)
	}
	user.mustRun("load", "-i", baseTar)
	files := map[string]string{"a.txt": "a\n", "dir/x": "x\n", "dir/sub/y": "y\n"}
	for name, fx := range rootlessFixtures {
		if fx.subIDs && !subIDs {
			continue
		}
		t.Run(name, func(t *testing.T) {
			var ids [2]string
			for i, e := range []*e2eEnv{root, user} {
				e.t = t
				ctx := e.context(fx.df, files)
				iid := filepath.Join(e.dir, name+".iid")
				_, errOut := e.mustRun("build", "--progress", "plain", "--network", "none", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", "--iidfile", iid, ctx)
				b, err := os.ReadFile(iid)
				if err != nil {
					t.Fatal(err)
				}
				ids[i] = string(b)
				if i == 1 && !strings.Contains(errOut, "isolation: rootless") {
					t.Errorf("the rootless build does not name its isolation:\n%s", errOut)
				}
			}
			if ids[0] != ids[1] {
				t.Errorf("root built %s, rootless %s", ids[0], ids[1])
				compareImages(t, root, user, ids[0], ids[1])
			}
		})
	}
}

// compareImages reports how two images of two envs differ, file by file.
func compareImages(t *testing.T, a, b *e2eEnv, idA, idB string) {
	t.Helper()
	ta, tb := filepath.Join(a.dir, "cmp-a.tar"), filepath.Join(b.dir, "cmp-b.tar")
	a.mustRun("save", "-o", ta, strings.TrimSpace(idA))
	b.mustRun("save", "-o", tb, strings.TrimSpace(idB))
	ia, ib := readImage(t, ta), readImage(t, tb)
	for _, d := range fixtures.CompareTrees(ia.tree, ib.tree) {
		t.Errorf("root vs rootless: %s", d)
	}
	for i := range min(len(ia.layers), len(ib.layers)) {
		if ia.diffIDs[i] != ib.diffIDs[i] {
			t.Errorf("layer %d: %v vs %v", i, names(ia.layers[i]), names(ib.layers[i]))
		}
	}
}
