package sandbox_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/snapshot"
)

// TestTempDir: the sandbox's private directory is made in Spec.TempDir
// (seen from inside through the scratch tmpfs the init mounts on it) and
// removed afterwards.
func TestTempDir(t *testing.T) {
	requireRoot(t)
	root := newRootfs(t, rootfsOpts{})
	tmp := t.TempDir()
	done := make(chan error, 1)
	go func() {
		done <- sandbox.Run(t.Context(), sandbox.Spec{
			Mounts:  []snapshot.Mount{{Type: "bind", Source: root, Options: []string{"rbind", "rw"}}},
			Args:    []string{"/bin/sh", "-c", "sleep 1"},
			TempDir: tmp,
		})
	}()
	seen := false
	for deadline := time.Now().Add(time.Second); !seen && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		m, _ := filepath.Glob(filepath.Join(tmp, "builder-sandbox-*"))
		seen = len(m) == 1
	}
	if !seen {
		t.Errorf("no sandbox directory in %s while running", tmp)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("sandbox left %v in %s", ents, tmp)
	}
	if err := sandbox.Run(t.Context(), sandbox.Spec{
		Mounts:  []snapshot.Mount{{Type: "bind", Source: root, Options: []string{"rbind", "rw"}}},
		Args:    []string{"true"},
		TempDir: filepath.Join(tmp, "missing"),
	}); err == nil {
		t.Error("Run with a missing TempDir succeeded")
	}
}
