package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestE2ELongRunBesideOtherCommands: a RUN that lasts longer than a minute
// (longer than any age a cleanup could use) while other commands open the
// same root — images, du, another build, and prune, which waits for the
// builds — must finish with its files. Scratch directories are held by a
// lock, not protected by a name or an age.
func TestE2ELongRunBesideOtherCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("a RUN of over a minute")
	}
	t.Parallel()
	e := newEnv(t)
	long := e.context("FROM busybox:fixture\nRUN sleep 70 && echo ok > /done\n", nil)
	quick := e.context("FROM busybox:fixture\nCOPY a /a\nRUN cat /a > /b\n", map[string]string{"a": "quick\n"})

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out := filepath.Join(e.dir, "long-out")
	cmd := exec.CommandContext(ctx, builderBin, "--root", e.root, "build", "--progress", "plain",
		"--network", "none", "-o", "type=local,dest="+out, long)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// Other commands, over and over, until the long RUN ends; each of them
	// opens the store and so cleans what it thinks abandoned.
	var mu sync.Mutex
	var failures []string
	counts := map[string]int{}
	runOther := func(args ...string) {
		_, serr, err := e.run(args...)
		mu.Lock()
		defer mu.Unlock()
		counts[args[0]]++
		if err != nil {
			failures = append(failures, fmt.Sprintf("builder %s: %v\n%s", strings.Join(args, " "), err, serr))
		}
	}
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	start := time.Now()
	var wg sync.WaitGroup
	var buildErr error
loop:
	for {
		select {
		case buildErr = <-done:
			break loop
		case <-tick.C:
			runOther("images")
			runOther("du")
			if time.Since(start) > 62*time.Second && counts["build"] == 0 {
				counts["build"]++ // counted once started
				wg.Add(2)
				go func() { defer wg.Done(); runOther("build", "--network", "none", "-t", "quick:1", quick) }()
				go func() { defer wg.Done(); runOther("prune") }()
			}
		}
	}
	wg.Wait()
	if buildErr != nil {
		t.Fatalf("long build: %v\nstdout:\n%s\nstderr:\n%s", buildErr, stdout.String(), stderr.String())
	}
	if took := time.Since(start); took < 70*time.Second {
		t.Fatalf("long build took %s, want over 70s (did its RUN run?)", took)
	}
	for _, f := range failures {
		t.Error(f)
	}
	if counts["images"] < 10 || counts["du"] < 10 || counts["prune"] != 1 {
		t.Errorf("other commands run: %v; want images and du at least 10 times while the RUN lasted, a build and a prune", counts)
	}
	wantFileContent(t, filepath.Join(out, "done"), "ok\n")
	e.checkNoActive()
}
