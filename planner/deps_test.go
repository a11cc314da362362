package planner

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestPureDependencies asserts that parser and planner stay pure: they
// never run processes or reach the packages that do I/O.
func TestPureDependencies(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	forbidden := []string{
		"os/exec",
		"github.com/builder-dev/builder/executor",
		"github.com/builder-dev/builder/snapshot",
		"github.com/builder-dev/builder/cache",
		"github.com/builder-dev/builder/exporter",
	}
	for _, pkg := range []string{"github.com/builder-dev/builder/parser", "github.com/builder-dev/builder/planner"} {
		out, err := exec.CommandContext(t.Context(), goBin, "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s returned only %v", pkg, deps)
		}
		for _, d := range deps {
			for _, f := range forbidden {
				if d == f || strings.HasPrefix(d, f+"/") {
					t.Errorf("%s depends on %s", pkg, d)
				}
			}
		}
	}
}
