package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/internal/testenv"
)

// cgroupLimits exercises every controller the limits use.
var cgroupLimits = sandbox.Limits{Memory: 1 << 30, CPUQuota: 100000, PidsLimit: 1000}

// requireCgroups skips where RUN limits cannot get a cgroup (fails in CI)
// and returns the builder's own cgroup directories.
func requireCgroups(t *testing.T) []string {
	t.Helper()
	testenv.RequireRoot(t)
	cg, err := sandbox.NewCgroups(cgroupLimits)
	if err == nil {
		err = cg.Close()
	}
	if err != nil {
		testenv.SkipOrFail(t, "RUN limits cannot get a cgroup here: %v", err)
	}
	dirs, err := sandbox.OwnCgroupDirs(cgroupLimits)
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

// buildCgroups lists the build cgroups (builder-PID) left in dirs.
func buildCgroups(t *testing.T, dirs []string) []string {
	t.Helper()
	var left []string
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.IsDir() && strings.HasPrefix(e.Name(), "builder-") && !strings.HasSuffix(e.Name(), ".self") {
				left = append(left, filepath.Join(d, e.Name()))
			}
		}
	}
	return left
}

// checkNoBuildCgroups fails if a build cgroup is left (after a grace
// period for a watchdog), ignoring those that existed before.
func checkNoBuildCgroups(t *testing.T, dirs, before []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		for _, d := range buildCgroups(t, dirs) {
			if !contains(before, d) {
				left = append(left, d)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("cgroups left behind: %v", left)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A RUN over --memory is killed by the OOM killer and fails with the
// step's line and the limit; no cgroup is left.
func TestE2ELimitMemory(t *testing.T) {
	dirs := requireCgroups(t)
	e := newEnv(t)
	before := buildCgroups(t, dirs)
	ctx := e.context("FROM busybox:fixture\nRUN echo start && head -c 600m /dev/zero | tail > /dev/null\n", nil)
	_, errOut, err := e.run("build", "--progress", "plain", "--network", "none", "--memory", "128m", ctx)
	if err == nil || !strings.Contains(errOut, "ERROR: Dockerfile:2: RUN echo start") ||
		!strings.Contains(errOut, "killed: out of memory (limit 128 MiB)") {
		t.Errorf("RUN over --memory 128m: %v\n%s", err, errOut)
	}
	checkNoBuildCgroups(t, dirs, before)
	// The same step within the limit passes, and the limits are not in
	// the cache key: a build without them is cached.
	ctx = e.context("FROM busybox:fixture\nRUN head -c 50m /dev/zero | tail > /dev/null && echo ok > /ok\n", nil)
	e.mustRun("build", "--network", "none", "--memory", "128m", "--memory-swap", "-1", ctx)
	_, errOut = e.mustRun("build", "--progress", "plain", "--network", "none", ctx)
	if strings.Contains(errOut, "cache miss") {
		t.Errorf("a build without the limits missed the cache:\n%s", errOut)
	}
	checkNoBuildCgroups(t, dirs, before)
}

// A fork bomb under --pids-limit fails cleanly: fork fails, the step fails,
// nothing it started is left, nor its cgroup.
func TestE2ELimitPids(t *testing.T) {
	dirs := requireCgroups(t)
	e := newEnv(t)
	before := buildCgroups(t, dirs)
	ctx := e.context("FROM busybox:fixture\nRUN bomb() { bomb | bomb & }; bomb; i=0; while [ $i -lt 300 ]; do sleep 7777 & i=$((i+1)); done\n", nil)
	start := time.Now()
	_, errOut, err := e.run("build", "--progress", "plain", "--network", "none", "--pids-limit", "30", ctx)
	if err == nil || !strings.Contains(errOut, "Dockerfile:2") || !strings.Contains(errOut, "can't fork") {
		t.Errorf("fork bomb under --pids-limit 30: %v\n%s", err, errOut)
	}
	if d := time.Since(start); d > time.Minute {
		t.Errorf("the fork bomb took %v", d)
	}
	if out, _ := exec.Command("pgrep", "-f", "sleep 7777").Output(); len(out) > 0 {
		t.Errorf("processes of the step left: %s", out)
	}
	checkNoBuildCgroups(t, dirs, before)
}

// A busy loop under --cpu-quota gets no more CPU than the quota: its CPU
// time over two seconds stays under 20% of them (with some slack).
func TestE2ELimitCPUQuota(t *testing.T) {
	dirs := requireCgroups(t)
	e := newEnv(t)
	before := buildCgroups(t, dirs)
	ctx := e.context("FROM busybox:fixture\n"+
		"RUN ( while :; do :; done ) & p=$!; sleep 2; cat /proc/$p/stat > /stat; kill $p\n", nil)
	out := filepath.Join(e.dir, "out")
	e.mustRun("build", "--network", "none", "--cpu-quota", "20000", "--cpu-period", "100000", "-o", "type=local,dest="+out, ctx)
	b, err := os.ReadFile(filepath.Join(out, "stat"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
	utime, err1 := strconv.Atoi(f[11])
	stime, err2 := strconv.Atoi(f[12])
	if err1 != nil || err2 != nil {
		t.Fatalf("parse %q", b)
	}
	// Clock ticks of 10 ms: 20% of 2 s is 40; allow 50% more.
	if ticks := utime + stime; ticks > 60 || ticks == 0 {
		t.Errorf("busy loop used %d ticks of CPU in 2 s under a 20%% quota", ticks)
	}
	checkNoBuildCgroups(t, dirs, before)
}

// --ulimit and --shm-size reach the command.
func TestE2ELimitUlimitShm(t *testing.T) {
	e := newEnv(t)
	ctx := e.context("FROM busybox:fixture\nRUN ulimit -n > /nofile && ulimit -Hn >> /nofile && df -k /dev/shm | tail -1 > /shm\n", nil)
	out := filepath.Join(e.dir, "out")
	e.mustRun("build", "--network", "none", "--ulimit", "nofile=321:654", "--shm-size", "32m", "-o", "type=local,dest="+out, ctx)
	if b, _ := os.ReadFile(filepath.Join(out, "nofile")); string(b) != "321\n654\n" {
		t.Errorf("ulimit -n, -Hn: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "shm")); !strings.Contains(string(b), " 32768 ") {
		t.Errorf("/dev/shm: %q, want 32768 KiB", b)
	}
}

// A builder killed with SIGKILL during a limited RUN leaves no cgroup
// (its watchdog removes them) and no process.
func TestE2ELimitKilledBuild(t *testing.T) {
	dirs := requireCgroups(t)
	e := newEnv(t)
	before := buildCgroups(t, dirs)
	ctx := e.context("FROM busybox:fixture\nRUN sleep 8888\n", nil)
	cmd := e.command(t.Context(), "--root", e.root, "build", "--network", "none", "--memory", "256m", "--pids-limit", "100", ctx)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if out, _ := exec.Command("pgrep", "-f", "sleep 8888").Output(); len(out) > 0 {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatal("the RUN did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(buildCgroups(t, dirs)) == len(before) {
		t.Error("no build cgroup while the RUN runs")
	}
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
	checkNoBuildCgroups(t, dirs, before)
	deadline = time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("pgrep", "-f", "sleep 8888|"+sandbox.ReaperArg).Output()
		if len(out) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes left after SIGKILL: %s", out)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}
