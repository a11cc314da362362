package cache

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScratchHeldSurvivesOpen: a scratch directory whose owner is alive is
// never removed by another Open, however old it is (a build's RUN may last
// hours); Close removes it.
func TestScratchHeldSurvivesOpen(t *testing.T) {
	s := openStore(t)
	sc, err := s.NewScratch(Temp, "build")
	if err != nil {
		t.Fatal(err)
	}
	act, err := s.NewScratch(Active, "build")
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	for _, d := range []string{sc.Path(), act.Path()} {
		if err := os.WriteFile(filepath.Join(d, "f"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(d, old, old); err != nil {
			t.Fatal(err)
		}
	}
	other, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if n, err := other.CleanScratch(); err != nil || n != 0 {
		t.Errorf("CleanScratch = %d, %v; want 0 bytes freed", n, err)
	}
	for _, d := range []string{sc.Path(), act.Path()} {
		if _, err := os.Stat(filepath.Join(d, "f")); err != nil {
			t.Errorf("live scratch directory lost its file: %v", err)
		}
	}
	for _, c := range []*Scratch{sc, act} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := os.Stat(c.Path()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("closed scratch %s still there: %v", c.Path(), err)
		}
	}
}

// TestScratchOfKilledOwnerRemoved: when the owner dies (SIGKILL), the next
// Open removes its scratch directories and temp files at once, young as
// they are.
func TestScratchOfKilledOwnerRemoved(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := startHelper(t, "scratch", root, pw)
	pw.Close()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	paths := strings.Fields(line)
	if len(paths) != 3 {
		t.Fatalf("helper printed %q", line)
	}
	// While the helper lives, another Open keeps everything.
	live, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	live.Close()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("Open beside a live owner removed %s: %v", p, err)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	after, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s of a killed owner survived the next Open: %v", p, err)
		}
	}
}

// TestScratchLegacyTemp: entries an older builder left in tmp/ (no scratch
// prefix) still go by their age and writer pid.
func TestScratchLegacyTemp(t *testing.T) {
	s := openStore(t)
	tmp := filepath.Join(s.Root(), "tmp")
	young := filepath.Join(tmp, "999999999.abc")
	stale := filepath.Join(tmp, "build-123")
	for _, p := range []string{young, stale} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if err := s.cleanLegacyTemp(time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("young legacy temp file removed: %v", err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale legacy entry kept: %v", err)
	}
}

// TestScratchAreas: only Temp and Active hold scratch directories; Dir
// makes areas private.
func TestScratchAreas(t *testing.T) {
	s := openStore(t)
	if _, err := s.NewScratch(Snapshots, "x"); err == nil {
		t.Error("NewScratch(Snapshots) succeeded")
	}
	d, err := s.Dir(RunCache)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(d)
	if err != nil || fi.Mode().Perm() != 0o700 || d != filepath.Join(s.Root(), "runcache") {
		t.Errorf("Dir(RunCache) = %s, %v, %v", d, fi.Mode(), err)
	}
}
