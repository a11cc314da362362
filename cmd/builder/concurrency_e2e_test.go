package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const concurrentDockerfile = `FROM busybox:fixture
COPY a.txt /a.txt
RUN sleep 0.1 && cat /a.txt > /b.txt
COPY c/ /c/
RUN ls /c > /list.txt && cat /a.txt >> /list.txt
`

// TestE2EConcurrentBuildsAndPrune runs 4 builds at once on one root, twice
// over (cold, then cached), while `builder prune` runs in a loop. Builds 0
// and 1 do identical work and must produce the identical image.
func TestE2EConcurrentBuildsAndPrune(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	shared := e.context(concurrentDockerfile, map[string]string{"a.txt": "same\n", "c/x": "x"})
	dirs := []string{shared, shared}
	for i := 2; i < 4; i++ {
		dirs = append(dirs, e.context(concurrentDockerfile, map[string]string{"a.txt": fmt.Sprintf("a%d\n", i), "c/x": "x"}))
	}
	ctx, stopPrune := context.WithCancel(context.Background())
	var prunes atomic.Int64
	pruneDone := make(chan struct{})
	go func() { e.pruneLoop(ctx, &prunes); close(pruneDone) }()

	for round := range 3 {
		before := prunes.Load()
		digests := e.concurrentBuilds(round, dirs)
		if digests[0] != digests[1] {
			t.Errorf("round %d: identical builds gave images %s and %s", round, digests[0], digests[1])
		}
		// Builds hold the store's shared lock and prune waits for the
		// exclusive one: let a prune in between the rounds.
		waitFor(t, 30*time.Second, func() bool { return prunes.Load() > before })
	}
	stopPrune()
	<-pruneDone
	checkStore(t, e.root)
	for i, d := range dirs {
		out := filepath.Join(e.dir, fmt.Sprintf("final-%d", i))
		e.build(d, "-o", "type=local,dest="+out)
		want := "same\n"
		if i >= 2 {
			want = fmt.Sprintf("a%d\n", i)
		}
		wantFileContent(t, filepath.Join(out, "list.txt"), "x\n"+want)
	}
}

// concurrentBuilds runs one build per context at the same time and returns
// their image digests.
func (e *e2eEnv) concurrentBuilds(round int, dirs []string) []string {
	e.t.Helper()
	digests := make([]string, len(dirs))
	errs := make([]error, len(dirs))
	var wg sync.WaitGroup
	for i, d := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			iid := filepath.Join(e.dir, fmt.Sprintf("iid-%d-%d", round, i))
			out, err := exec.Command(builderBin, "--root", e.root, "build", "--progress", "plain",
				"--build-arg", "SOURCE_DATE_EPOCH=0", "--iidfile", iid, "-t", fmt.Sprintf("conc:%d", i), d).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("build %d: %v\n%s", i, err, out)
				return
			}
			b, err := os.ReadFile(iid)
			digests[i], errs[i] = strings.TrimSpace(string(b)), err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			e.t.Errorf("round %d: %v", round, err)
		}
	}
	return digests
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pruneLoop runs `builder prune --filter until=0s` (every entry no tag
// needs, whatever its age; every third time --all) until ctx is done, counting the prunes that succeeded in n. A failed prune fails
// the test.
func (e *e2eEnv) pruneLoop(ctx context.Context, count *atomic.Int64) {
	for ctx.Err() == nil {
		n := count.Load()
		args := []string{"--root", e.root, "prune", "--filter", "until=0s"}
		if n%3 == 2 {
			args = []string{"--root", e.root, "prune", "--all"}
		}
		out, err := exec.Command(builderBin, args...).CombinedOutput()
		if err != nil {
			e.t.Errorf("builder %s: %v\n%s", strings.Join(args[2:], " "), err, out)
			return
		}
		count.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
