package exporter

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/internal/testenv"
)

// TestDockerLoad loads a WriteDocker archive of a scratch image with one
// file into the real daemon and inspects it.
func TestDockerLoad(t *testing.T) {
	testenv.RequireDocker(t)
	ls := newFakeLayers()
	img := testImage(t, ls, map[string]string{"hello": "from builder"})
	tag := fmt.Sprintf("builder-exporter-test:%d", os.Getpid())
	path := filepath.Join(t.TempDir(), "img.tar")
	if err := WriteDocker(t.Context(), path, []Tagged{{Image: img, Tags: []string{tag}}}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), testenv.DockerBin, "load", "-i", path).CombinedOutput()
	if err != nil {
		t.Fatalf("docker load: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(testenv.DockerBin, "rmi", "-f", tag).Run() })
	if !strings.Contains(string(out), tag) {
		t.Errorf("docker load output %q does not name %s", out, tag)
	}
	out, err = exec.CommandContext(t.Context(), testenv.DockerBin, "image", "inspect", tag).Output()
	if err != nil {
		t.Fatalf("docker image inspect: %v", err)
	}
	var info []struct {
		ID     string
		Config struct{ Cmd []string }
		RootFS struct{ Layers []string }
	}
	if err := json.Unmarshal(out, &info); err != nil || len(info) != 1 {
		t.Fatalf("inspect output: %v %s", err, out)
	}
	cfgName, _ := img.ConfigName()
	cfg, _ := img.ConfigFile()
	if info[0].ID != cfgName.String() && !strings.Contains(string(out), mustDigest(t, img).String()) {
		t.Errorf("docker ID %s, want config %s or manifest %s", info[0].ID, cfgName, mustDigest(t, img))
	}
	if len(info[0].RootFS.Layers) != 1 || info[0].RootFS.Layers[0] != cfg.RootFS.DiffIDs[0].String() {
		t.Errorf("docker layers %v, want %v", info[0].RootFS.Layers, cfg.RootFS.DiffIDs)
	}
	if len(info[0].Config.Cmd) != 1 || info[0].Config.Cmd[0] != "/hello" {
		t.Errorf("docker Cmd %v", info[0].Config.Cmd)
	}
}
