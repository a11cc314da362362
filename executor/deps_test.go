package executor

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDeps keeps the executor on its side of the image store: it reaches
// images through ImageStore (DESIGN.md: the executor must not know how
// images are stored), never through the exporter or the CLI.
func TestDeps(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.CommandContext(t.Context(), goBin, "list", "-deps", "github.com/builder-dev/builder/executor").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps returned only %v", deps)
	}
	forbidden := []string{
		"github.com/builder-dev/builder/exporter",
		"github.com/builder-dev/builder/cmd",
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("executor depends on %s", d)
			}
		}
	}
}
