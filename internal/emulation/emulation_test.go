package emulation

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/builder-dev/builder/internal/testenv"
)

// Debian's qemu-user-static registrations of aarch64 and riscv64, and
// arm's without the F flag.
var handlerFiles = map[string]string{
	"status":   "enabled\n",
	"register": "",
	"qemu-aarch64": "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n" +
		"magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n",
	"qemu-arm": "enabled\ninterpreter /usr/libexec/qemu-binfmt/arm-binfmt-P\nflags: P\noffset 0\n" +
		"magic 7f454c4601010100000000000000000002002800\nmask ffffffffffffff00fffffffffffffffffeffffff\n",
	"qemu-s390x": "disabled\ninterpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P\nflags: PF\noffset 0\n" +
		"magic 7f454c469202010000000000000000000002001600\nmask ffffffffffffff00fffffffffffffffffeffffff\n",
	"python3.11": "enabled\ninterpreter /usr/bin/python3.11\nflags: \nextension .pyc\n",
}

func fakeBinfmt(t *testing.T) string {
	dir := t.TempDir()
	for name, data := range handlerFiles {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCanRun(t *testing.T) {
	hs, err := ReadHandlers(fakeBinfmt(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 3 {
		t.Fatalf("handlers %+v, want the three with magic", hs)
	}
	h := Host{Arch: "amd64", Handlers: hs}
	for _, tc := range []struct {
		p       v1.Platform
		how     string
		errPart string
	}{
		{v1.Platform{OS: "linux", Architecture: "amd64"}, "native", ""},
		{v1.Platform{OS: "linux", Architecture: "386"}, "native", ""},
		{v1.Platform{OS: "linux", Architecture: "arm64"}, "qemu-aarch64", ""},
		{v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, "qemu-aarch64", ""},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, "", "without the F flag"},
		{v1.Platform{OS: "linux", Architecture: "s390x"}, "", "no emulator registered; install qemu-user-static"},
		{v1.Platform{OS: "linux", Architecture: "riscv64"}, "", "RUN needs linux/riscv64: no emulator registered"},
		{v1.Platform{OS: "darwin", Architecture: "arm64"}, "", "only linux programs"},
		{v1.Platform{OS: "linux", Architecture: "sparc"}, "", "does not know"},
	} {
		how, err := h.CanRun(tc.p)
		switch {
		case tc.errPart == "" && (err != nil || how != tc.how):
			t.Errorf("%v: %q, %v; want %q", tc.p, how, err, tc.how)
		case tc.errPart != "" && (err == nil || !strings.Contains(err.Error(), tc.errPart)):
			t.Errorf("%v: %v, want an error containing %q", tc.p, err, tc.errPart)
		}
	}
}

// The ELF headers builder makes are those of real executables: the host's
// own binary matches its architecture's.
func TestHeaderOfHostBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, 20)
	if _, err := io.ReadFull(f, got); err != nil {
		t.Fatal(err)
	}
	want := elfArches[runtime.GOARCH].header()
	// e_type of a Go test binary may be ET_DYN (PIE): compare all but it.
	for i := range 20 {
		if i == 16 || i == 17 || i == 7 || i == 8 {
			continue
		}
		if got[i] != want[i] {
			t.Fatalf("byte %d: host binary %x, header %x", i, got, want)
		}
	}
}

// On this machine (CI installs qemu-user-static and mounts binfmt_misc):
// arm64 programs run emulated, amd64 natively.
func TestDetectHost(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the CI machine is amd64")
	}
	h, err := Detect()
	if err != nil {
		t.Fatal(err)
	}
	how, err := h.CanRun(v1.Platform{OS: "linux", Architecture: "arm64"})
	if err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	if how == "native" {
		t.Errorf("arm64 on amd64: %q", how)
	}
}
