package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestE2ELeak runs 20 builds (successful ones, failing ones and ones
// interrupted with SIGINT mid-RUN, all starting background processes)
// and then checks that nothing is left over: no mount, no process, no
// temporary directory, no active snapshot (issue #3, RUN-07, RUN-08).
func TestE2ELeak(t *testing.T) {
	e := newEnv(t)
	// A unique sleep duration marks this test's processes in /proc.
	marker := fmt.Sprintf("1%09d", (os.Getpid()*7919+int(time.Now().UnixNano()%1e6))%1e9)
	tmp := t.TempDir()
	lt := &leakTest{e: e, marker: marker, env: []string{"TMPDIR=" + tmp}}
	for i := range 20 {
		switch i % 4 {
		case 0:
			lt.build(i, "(sleep "+marker+" &) ; true", 0)
		case 1:
			lt.build(i, "sleep "+marker+" & echo bg started; exit 3", 3)
		case 2:
			lt.interrupt(i)
		case 3:
			lt.build(i, "nohup sleep "+marker+" > /dev/null 2>&1 &\nRUN echo after", 0)
		}
		if t.Failed() {
			break
		}
		lt.checkProcesses()
	}
	lt.checkProcesses()
	checkMounts(t, e.dir, tmp)
	e.checkNoActive()
	checkEmptyDir(t, tmp)
	checkNoTempSnapshots(t, filepath.Join(e.root, "snapshots"))
}

type leakTest struct {
	e      *e2eEnv
	marker string
	env    []string
}

// command returns a builder build of a Dockerfile whose RUN is run,
// with the overlay snapshotter for builds 0-3, 8-11, 16-19 and the copy
// snapshotter for the others.
func (lt *leakTest) command(ctx context.Context, i int, run string) *exec.Cmd {
	dir := lt.e.context(fmt.Sprintf("FROM busybox:fixture\nARG N=%d\nRUN echo $N > /n\nRUN %s\n", i, run), nil)
	sn := []string{"overlay", "copy"}[(i/4)%2]
	cmd := exec.CommandContext(ctx, builderBin, "--root", lt.e.root, "build", "--progress", "plain",
		"--network", "none", "--snapshotter", sn, "-t", fmt.Sprintf("leak:%d", i), dir)
	cmd.Env = append(os.Environ(), lt.env...)
	return cmd
}

// build runs one build to completion: it must end promptly (background
// processes don't hold the step) with the wanted exit status.
func (lt *leakTest) build(i int, run string, wantFail int) {
	t := lt.e.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := lt.command(ctx, i, run)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("build %d took %v: a background process held the step", i, d)
	}
	switch {
	case wantFail == 0 && err != nil:
		t.Errorf("build %d: %v\n%s", i, err, out.String())
	case wantFail != 0 && err == nil:
		t.Errorf("build %d succeeded, want failure", i)
	case wantFail != 0 && !strings.Contains(out.String(), fmt.Sprintf("exit code: %d", wantFail)):
		t.Errorf("build %d: error lacks exit code %d:\n%s", i, wantFail, out.String())
	}
}

// interrupt starts a build whose RUN sleeps, sends SIGINT (SIGTERM for
// builds 8-15) once the RUN has started, and wants the builder to exit
// non-zero within a few seconds.
func (lt *leakTest) interrupt(i int) {
	t := lt.e.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := lt.command(ctx, i, "echo sleeping-"+lt.marker+"; sleep "+lt.marker)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started, done := make(chan struct{}), make(chan struct{})
	var out bytes.Buffer
	go func() {
		defer close(done)
		signal := started
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			// The echo's output, not the RUN line that names it.
			if signal != nil && strings.Contains(sc.Text(), "sleeping-"+lt.marker) && !strings.Contains(sc.Text(), "RUN") {
				close(signal)
				signal = nil
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Errorf("build %d: RUN did not start", i)
	}
	time.Sleep(200 * time.Millisecond) // let the sleep start too
	// The process scan must see the sandbox's processes, or the checks
	// after the build prove nothing.
	if len(findProcesses(t, "sleep "+lt.marker)) == 0 {
		t.Errorf("build %d: the running RUN's sleep is not visible in /proc", i)
	}
	sig := []syscall.Signal{syscall.SIGINT, syscall.SIGTERM}[(i/8)%2]
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	err := cmd.Wait()
	d := time.Since(sent)
	pw.Close()
	<-done
	if d > 5*time.Second {
		t.Errorf("build %d: exited %v after %v\n%s", i, d, sig, out.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("interrupted build %d: %v, want non-zero exit\n%s", i, err, out.String())
	}
}

// checkProcesses wants no process of this test left: none running the
// marked sleep, none running the builder on this store root.
func (lt *leakTest) checkProcesses() {
	t := lt.e.t
	t.Helper()
	var left []string
	deadline := time.Now().Add(3 * time.Second)
	for {
		left = findProcesses(t, "sleep "+lt.marker, lt.e.root)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range left {
		t.Errorf("process left over: %s", p)
	}
}

// findProcesses returns "pid: cmdline" of processes whose command line
// contains any of subs.
func findProcesses(t *testing.T, subs ...string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, en := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", en.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue // not a process, or gone, or a zombie/kernel thread
		}
		cmdline := strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		for _, s := range subs {
			if strings.Contains(cmdline, s) {
				out = append(out, en.Name()+": "+cmdline)
				break
			}
		}
	}
	return out
}

// checkMounts wants no mount point under any of dirs.
func checkMounts(t *testing.T, dirs ...string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		for _, d := range dirs {
			if f[4] == d || strings.HasPrefix(f[4], d+"/") {
				t.Errorf("mount left under %s: %s", d, line)
			}
		}
	}
}

func checkEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range ents {
		t.Errorf("temporary %s left in %s", en.Name(), dir)
	}
}

// checkNoTempSnapshots wants no half-made or half-removed snapshot
// directory (the layer store names those with a leading dot).
func checkNoTempSnapshots(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range ents {
		if strings.HasPrefix(en.Name(), ".") {
			t.Errorf("temporary snapshot directory %s left in %s", en.Name(), dir)
		}
	}
}

// TestE2EKilledBuild: SIGKILL of the builder mid-RUN cannot run any
// cleanup code, yet the kernel must take everything that matters with it:
// the RUN's processes (PID namespace init dies with the builder), every
// mount (private mount namespace), and nothing may be left outside the
// store root; the next build on the same store succeeds.
func TestE2EKilledBuild(t *testing.T) {
	e := newEnv(t)
	marker := fmt.Sprintf("2%09d", (os.Getpid()*7919+int(time.Now().UnixNano()%1e6))%1e9)
	tmp := t.TempDir()
	lt := &leakTest{e: e, marker: marker, env: []string{"TMPDIR=" + tmp}}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := lt.command(ctx, 0, "(sleep "+marker+" &) ; sleep "+marker)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(findProcesses(t, "sleep "+marker)) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(findProcesses(t, "sleep "+marker)); n < 2 {
		t.Fatalf("RUN did not start its two sleeps (%d seen)", n)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	lt.checkProcesses()
	checkMounts(t, e.dir, tmp)
	checkEmptyDir(t, tmp)
	// The killed build's scratch (active snapshot, sandbox, temp files)
	// is held by no one now: the next command to open the store, whatever
	// it is, removes it.
	if n := scratchEntries(t, e.root); n == 0 {
		t.Fatal("the killed build left no scratch directory: the test kills it too late")
	}
	e.mustRun("images")
	e.checkNoActive()
	lt.build(1, "echo ok", 0)
}

// scratchEntries counts the entries of the store's scratch areas.
func scratchEntries(t *testing.T, root string) int {
	t.Helper()
	var n int
	for _, d := range []string{"tmp", "active"} {
		ents, err := os.ReadDir(filepath.Join(root, d))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		n += len(ents)
	}
	return n
}
