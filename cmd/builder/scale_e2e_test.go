package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scaleDockerfile does a little of everything a build does: COPY of a
// context of some thousands of files, RUNs that write tens of MB (a commit
// of size), and a second stage copied from the first. Its output depends
// only on its inputs (SOURCE_DATE_EPOCH is set by the builds).
const scaleDockerfile = `FROM busybox:fixture AS gen
COPY big/ /big/
RUN mkdir /gen && for d in /big/*; do cat $d/* > /gen/$(basename $d); done && cp -r /big /copy
RUN cat /gen/* | gzip -1 > /all.gz
FROM busybox:fixture
COPY --from=gen /all.gz /gen /out/
COPY small.txt /small.txt
RUN ls -R /out > /listing
`

// writeScaleContext writes 40 directories of 50 files of 16 KiB, each with
// content that differs by name.
func writeScaleContext(t *testing.T, e *e2eEnv) string {
	t.Helper()
	dir := e.context(scaleDockerfile, map[string]string{"small.txt": "small 0\n"})
	for d := range 40 {
		for f := range 50 {
			line := fmt.Sprintf("dir %02d file %02d ", d, f)
			content := strings.Repeat(line, 16384/len(line))
			p := filepath.Join(dir, "big", fmt.Sprintf("d%02d", d), fmt.Sprintf("f%02d", f))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// killOp is one kind of command the kill test interrupts.
type killOp struct {
	name  string
	root  func() string   // the store it runs on
	setup func()          // untimed preparation before each run
	args  func() []string // the command, without --root
	took  time.Duration   // one uninterrupted run, measured first
}

// TestE2EKillsAtScale: 50 SIGKILLs at random moments inside builds, exports,
// cache exports, pushes and pulls. The kill moments are spread over each
// command's measured duration, so most land mid-command. After each kill
// the store is consistent (every blob's digest is its name, no record
// names a missing blob or layer, every layer directory is whole), no
// process or mount is left, and at the end a build on the killed store
// gives the same image as one on a clean store.
func TestE2EKillsAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("50 killed builds")
	}
	t.Parallel()
	e := newEnv(t)
	reg := startRegistry(t)
	e.mustRun("push", "busybox:fixture", reg+"/busybox:fixture")
	ctxDir := writeScaleContext(t, e)
	epoch := []string{"--build-arg", "SOURCE_DATE_EPOCH=1700000000", "--network", "none"}
	pullRoot := filepath.Join(e.dir, "pull-root")
	var seq int
	ops := []*killOp{
		{name: "cold build, oci export, cache-to", root: func() string { return e.root },
			args: func() []string {
				return append([]string{"build", "--progress", "plain", "--no-cache", "-t", "scale:1",
					"-o", "type=oci,dest=" + filepath.Join(e.dir, "scale-oci.tar"),
					"--cache-to", "type=local,dest=" + filepath.Join(e.dir, "cache-out")}, append(epoch, ctxDir)...)
			}},
		{name: "incremental build", root: func() string { return e.root },
			setup: func() { seq++; e.write(ctxDir, "small.txt", fmt.Sprintf("small %d\n", seq)) },
			args: func() []string {
				return append([]string{"build", "--progress", "plain", "-t", "scale:1"}, append(epoch, ctxDir)...)
			}},
		{name: "save", root: func() string { return e.root },
			args: func() []string { return []string{"save", "-o", filepath.Join(e.dir, "scale-save.tar"), "scale:1"} }},
		{name: "push to a new repository", root: func() string { return e.root },
			setup: func() { seq++ },
			args:  func() []string { return []string{"push", "scale:1", fmt.Sprintf("%s/scale%d:1", reg, seq)} }},
		{name: "pull into an empty store", root: func() string { return pullRoot },
			setup: func() {
				if err := os.RemoveAll(pullRoot); err != nil {
					t.Fatal(err)
				}
			},
			args: func() []string { return []string{"pull", reg + "/scale:1"} }},
	}
	// Measure each command once, whole; this also makes what the next ones
	// need (the image to save and push, the pushed image to pull).
	for _, op := range ops {
		if op.setup != nil {
			op.setup()
		}
		if op.name == "pull into an empty store" {
			e.mustRun("push", "scale:1", reg+"/scale:1")
		}
		start := time.Now()
		runIn(t, op.root(), op.args()...)
		op.took = time.Since(start)
		t.Logf("%s: %v uninterrupted", op.name, op.took)
	}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	var kills, midway int
	perOp := map[string]int{}
	for i := 0; kills < 50; i++ {
		if i >= 120 {
			t.Fatalf("only %d of %d commands were killed mid-way", kills, i)
		}
		op := ops[i%len(ops)]
		if op.setup != nil {
			op.setup()
		}
		// Most moments inside the command; a few just before its end.
		delay := time.Duration(float64(op.took) * (0.05 + 0.9*rng.Float64()))
		killed := killAfter(t, op.root(), op.args(), delay)
		if killed {
			kills++
			perOp[op.name]++
			if delay < op.took*9/10 {
				midway++
			}
		}
		checkStore(t, op.root())
		if t.Failed() {
			t.Fatalf("store inconsistent after %s killed after %v", op.name, delay)
		}
	}
	t.Logf("kills: %d (%d before 90%% of the command's duration); per command: %v; failures: 0", kills, midway, perOp)
	if midway < 40 {
		t.Errorf("only %d of %d kills landed mid-command", midway, kills)
	}

	// The killed store builds the same image as a clean one, and its next
	// build after that is all cache hits.
	e.write(ctxDir, "small.txt", "final\n")
	iid := filepath.Join(e.dir, "iid-killed")
	runIn(t, e.root, append([]string{"build", "--progress", "plain", "--iidfile", iid}, append(epoch, ctxDir)...)...)
	clean := e.fresh("clean-root")
	saved := filepath.Join(e.dir, "base.tar")
	e.mustRun("save", "-o", saved, "busybox:fixture")
	clean.mustRun("load", "-i", saved)
	cleanIID := filepath.Join(e.dir, "iid-clean")
	runIn(t, clean.root, append([]string{"build", "--progress", "plain", "--iidfile", cleanIID}, append(epoch, ctxDir)...)...)
	a, b := readFileString(t, iid), readFileString(t, cleanIID)
	if a != b {
		t.Errorf("image after the kills %s, on a clean store %s", a, b)
	}
	checkStore(t, e.root)
}

// runIn runs builder on root and fails the test if it fails.
func runIn(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := exec.Command(builderBin, append([]string{"--root", root}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("builder %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// killAfter starts builder on root, SIGKILLs it after delay, and waits until
// none of its processes is left. A command that ends first must succeed.
// It reports whether the kill happened.
func killAfter(t *testing.T, root string, args []string, delay time.Duration) bool {
	t.Helper()
	env := &e2eEnv{t: t, root: root}
	return env.killBuildAfter(args, delay)
}

func readFileString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestE2ESixteenBuildsAtOnce: 16 builds at once on one root — four
// Dockerfiles four times each, one of them with a RUN of over a minute —
// beside a prune loop and images/du calls: none fails, and each image is
// the one a serial build of the same Dockerfile on a clean store makes.
func TestE2ESixteenBuildsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("a RUN of over a minute")
	}
	t.Parallel()
	e := newEnv(t)
	dfs := []string{
		"FROM busybox:fixture\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n",
		"FROM busybox:fixture\nRUN sleep 65 && echo long > /long\nCOPY a.txt /a.txt\n",
		"FROM busybox:fixture AS s\nCOPY a.txt /a\nRUN mkdir /d && for i in 1 2 3; do cat /a > /d/$i; done\nFROM busybox:fixture\nCOPY --from=s /d /d\n",
		"FROM busybox:fixture\nRUN --mount=type=cache,target=/c echo x >> /c/log && cp /c/log /log.copy && rm /log.copy\nCOPY a.txt /x\n",
	}
	var dirs []string
	for i, df := range dfs {
		dirs = append(dirs, e.context(df, map[string]string{"a.txt": fmt.Sprintf("a%d\n", i)}))
	}
	epoch := []string{"--build-arg", "SOURCE_DATE_EPOCH=1700000000", "--network", "none"}

	ctx, stop := context.WithCancel(context.Background())
	var prunes, queries atomic.Int64
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); e.pruneLoop(ctx, &prunes) }()
	go func() {
		defer bg.Done()
		for ctx.Err() == nil {
			for _, c := range []string{"images", "du"} {
				if out, err := exec.Command(builderBin, "--root", e.root, c).CombinedOutput(); err != nil {
					t.Errorf("builder %s: %v\n%s", c, err, out)
					return
				}
				queries.Add(1)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()

	digests := make([]string, 16)
	errs := make([]error, 16)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			iid := filepath.Join(e.dir, fmt.Sprintf("iid16-%d", i))
			args := append([]string{"--root", e.root, "build", "--progress", "plain", "--iidfile", iid,
				"-t", fmt.Sprintf("sixteen:%d", i)}, append(epoch, dirs[i%4])...)
			out, err := exec.Command(builderBin, args...).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("build %d: %v\n%s", i, err, out)
				return
			}
			b, err := os.ReadFile(iid)
			digests[i], errs[i] = strings.TrimSpace(string(b)), err
		}()
	}
	wg.Wait()
	stop()
	bg.Wait()
	failures := 0
	for _, err := range errs {
		if err != nil {
			failures++
			t.Error(err)
		}
	}
	t.Logf("16 builds at once: %d failures; %d prunes and %d images/du calls beside them", failures, prunes.Load(), queries.Load())
	if prunes.Load() == 0 || queries.Load() < 16 {
		t.Errorf("the prune loop (%d) or images/du calls (%d) did not run beside the builds", prunes.Load(), queries.Load())
	}

	clean := e.fresh("serial-root")
	saved := filepath.Join(e.dir, "base16.tar")
	e.mustRun("save", "-o", saved, "busybox:fixture")
	clean.mustRun("load", "-i", saved)
	for i, d := range dirs {
		iid := filepath.Join(e.dir, fmt.Sprintf("iid-serial-%d", i))
		runIn(t, clean.root, append([]string{"build", "--progress", "plain", "--iidfile", iid}, append(epoch, d)...)...)
		want := readFileString(t, iid)
		for j := i; j < 16; j += 4 {
			if digests[j] != want {
				t.Errorf("build %d (Dockerfile %d) gave %s; serial build on a clean store %s", j, i, digests[j], want)
			}
		}
	}
	checkStore(t, e.root)
}
