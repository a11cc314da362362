package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/builder-dev/builder/internal/testenv"
)

// Where mknod is refused to root, a RUN's /dev/null is the host's bound
// read-only: it is written to as ever, but its owner, mode and times
// cannot be changed through it (EROFS), so the host's node is safe.
func TestBindDeviceReadOnly(t *testing.T) {
	testenv.RequireRoot(t)
	dev := t.TempDir()
	if err := bindDevice(dev, devNode{name: "null", major: 1, minor: 3}, true); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dev, "null")
	t.Cleanup(func() { _ = unix.Unmount(p, unix.MNT_DETACH) })
	if err := os.WriteFile(p, []byte("x"), 0o666); err != nil {
		t.Errorf("write to the bound device: %v", err)
	}
	if err := os.Chmod(p, 0o666); !errors.Is(err, unix.EROFS) {
		t.Errorf("chmod of the bound host device: %v, want EROFS", err)
	}
	if err := os.Chtimes(p, time.Unix(0, 0), time.Unix(0, 0)); !errors.Is(err, unix.EROFS) {
		t.Errorf("touch of the bound host device: %v, want EROFS", err)
	}
}
