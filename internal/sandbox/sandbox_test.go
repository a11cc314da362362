package sandbox_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/snapshot"
	"github.com/google/go-cmp/cmp"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	mounts := []snapshot.Mount{{Type: "bind", Source: "/nonexistent", Options: []string{"rbind"}}}
	cases := map[string]sandbox.Spec{
		"no mounts":      {Args: []string{"true"}},
		"no args":        {Mounts: mounts},
		"empty argv0":    {Mounts: mounts, Args: []string{""}},
		"relative cwd":   {Mounts: mounts, Args: []string{"true"}, Cwd: "work"},
		"bad network":    {Mounts: mounts, Args: []string{"true"}, Network: "bridge"},
		"bad extra host": {Mounts: mounts, Args: []string{"true"}, ExtraHosts: []string{"a b c"}},
		"bad hostname":   {Mounts: mounts, Args: []string{"true"}, Hostname: "a b"},
		"long hostname":  {Mounts: mounts, Args: []string{"true"}, Hostname: strings.Repeat("a", 65)},
	}
	for name, spec := range cases {
		if err := sandbox.Run(t.Context(), spec); !errors.Is(err, sandbox.ErrInvalidSpec) {
			t.Errorf("%s: got %v, want ErrInvalidSpec", name, err)
		}
	}
}

func TestEcho(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	out, stderr, err := run(t.Context(), shSpec(root, "echo out; echo err >&2"))
	if err != nil || out != "out\n" || stderr != "err\n" {
		t.Fatalf("got stdout %q, stderr %q, err %v", out, stderr, err)
	}
}

func TestExitStatus(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	cases := []struct {
		args []string
		want sandbox.ExitError
	}{
		{[]string{"/bin/sh", "-c", "exit 3"}, sandbox.ExitError{Code: 3}},
		{[]string{"/bin/sh", "-c", "kill -9 $$"}, sandbox.ExitError{Code: 137, Signal: "SIGKILL"}},
		{[]string{"/bin/sh", "-c", "nosuchcommand"}, sandbox.ExitError{Code: 127}},
		{[]string{"nosuchcommand"}, sandbox.ExitError{Code: 127}},
		{[]string{"/etc/passwd"}, sandbox.ExitError{Code: 126}},
	}
	for _, c := range cases {
		spec := shSpec(root, "")
		spec.Args = c.args
		_, stderr, err := run(t.Context(), spec)
		var ee *sandbox.ExitError
		if !errors.As(err, &ee) || *ee != c.want {
			t.Errorf("%q: got %v (stderr %q), want %v", c.args, err, stderr, &c.want)
		}
	}
}

func TestEnvIsExact(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	env := []string{"PATH=/bin", "FOO=bar baz", "EMPTY="}
	out := mustRun(t, sandbox.Spec{Mounts: bindRoot(root), Args: []string{"env"}, Env: env})
	got := strings.Split(strings.TrimSpace(out), "\n")
	if diff := cmp.Diff(env, got); diff != "" {
		t.Errorf("environment (-want +got):\n%s", diff)
	}
}

func TestCredentials(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	spec := shSpec(root, "id -u; id -g; id -G; grep -E '^Cap(Eff|Bnd)' /proc/self/status")
	spec.UID, spec.GID, spec.AdditionalGids = 1000, 1000, []uint32{10, 20}
	want := "1000\n1000\n1000 10 20\nCapEff:\t0000000000000000\nCapBnd:\t00000000a80425fb\n"
	if diff := cmp.Diff(want, mustRun(t, spec)); diff != "" {
		t.Errorf("user 1000 (-want +got):\n%s", diff)
	}
	spec.UID, spec.GID, spec.AdditionalGids = 0, 0, nil
	want = "0\n0\n0\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n"
	if diff := cmp.Diff(want, mustRun(t, spec)); diff != "" {
		t.Errorf("root (-want +got):\n%s", diff)
	}
}

func TestCwdHostnameEtc(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	// As BuildKit's: no /etc/hostname; /etc/hosts and /etc/resolv.conf
	// bound read-only, nosuid, nodev, noexec.
	spec := shSpec(root, `pwd; hostname; test -e /etc/hostname && echo etc-hostname; cat /etc/hosts /etc/resolv.conf
echo x > /etc/hosts 2>/dev/null && echo hosts-writable
grep -E ' /etc/(hosts|resolv.conf) ' /proc/mounts | cut -d' ' -f2,4 | cut -d, -f1-4`)
	spec.Cwd = "/work/sub"
	spec.Hostname = "step7"
	spec.ResolvConf = []byte("nameserver 192.0.2.1\n")
	want := "/work/sub\nstep7\n" +
		"127.0.0.1\tlocalhost step7\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"nameserver 192.0.2.1\n" +
		"/etc/hosts ro,nosuid,nodev,noexec\n/etc/resolv.conf ro,nosuid,nodev,noexec\n"
	if diff := cmp.Diff(want, mustRun(t, spec)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if !fileExists(root + "/work/sub") {
		t.Errorf("working directory not created in the root")
	}
	spec.Hosts = []byte("10.0.0.1 db\n")
	spec.Args = []string{"cat", "/etc/hosts"}
	if got := mustRun(t, spec); got != "10.0.0.1 db\n" {
		t.Errorf("custom hosts: got %q", got)
	}
}

// RUN-02: only stdio reaches the command; the init's binary is out of reach.
func TestFileDescriptorsAndInit(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	hash := fileHash(t, exe)
	defer func() {
		if fileHash(t, exe) != hash {
			t.Errorf("host binary %s changed", exe)
		}
	}()
	// ls opens the directory as fd 3 itself.
	if got := mustRun(t, shSpec(root, "ls /proc/self/fd")); got != "0\n1\n2\n3\n" {
		t.Errorf("open fds: got %q, want 0 1 2 and ls's own 3", got)
	}
	script := `echo pwned >> /proc/1/exe 2>/dev/null && echo exe-writable
readlink /proc/1/exe >/dev/null 2>&1 && echo exe-visible
echo x > /dev/tty 2>/dev/null && echo tty-writable
for f in /proc/1/fd/*; do readlink $f 2>/dev/null && echo fd-visible; cat $f </dev/null >/dev/null 2>&1 && echo fd-open; done
echo done`
	if got := mustRun(t, shSpec(root, script)); got != "done\n" {
		t.Errorf("init reachable: got %q", got)
	}
}

func TestMaskedAndReadonly(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	script := `test -s /proc/kcore && echo kcore-readable
cat /proc/keys
ls /sys/firmware
touch /sys/kernel/x 2>/dev/null && echo sys-writable
echo 1 > /proc/sys/kernel/x 2>/dev/null && echo proc-sys-writable
echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable
grep -E ' /sys | /proc/sys ' /proc/mounts | grep -vc ' ro,'
true`
	if got := mustRun(t, shSpec(root, script)); got != "0\n" {
		t.Errorf("masked or read-only paths exposed:\n%s", got)
	}
}

// Insecure (RUN --security=insecure) as BuildKit grants it: every
// capability the builder has in all five sets, for root and for another
// user; /sys writable; nothing of /proc or /sys masked or read-only;
// BuildKit's extra devices.
func TestInsecure(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	var want string
	for _, l := range strings.Split(readHostFile(t, "/proc/self/status"), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:\t"); ok {
			want = v
		}
	}
	caps := "grep ^Cap /proc/self/status | cut -f2 | sort -u"
	spec := shSpec(root, caps+`
grep -E ' /sys | /proc/sys | /sys/firmware | /proc/keys ' /proc/mounts | cut -d' ' -f2,4 | cut -d, -f1
ls -l /dev/kmsg /dev/fuse /dev/cuse /dev/kvm /dev/net/tun /dev/loop-control /dev/loop0 /dev/loop7 | cut -c1-10 | sort -u`)
	spec.Insecure = true
	got := mustRun(t, spec)
	if w := want + "\n/sys rw\nbrw-rw-rw-\ncrw-rw-rw-\n"; got != w {
		t.Errorf("insecure root: got\n%s\nwant\n%s", got, w)
	}
	spec = shSpec(root, caps)
	spec.Insecure, spec.UID, spec.GID = true, 1000, 1000
	if got := mustRun(t, spec); got != want+"\n" {
		t.Errorf("insecure uid 1000: got\n%s\nwant %s", got, want)
	}
	// Without it: Docker's default set, masks, no extra devices.
	spec = shSpec(root, "grep ^CapBnd /proc/self/status | cut -f2; grep -c ' /proc/sys ' /proc/mounts; test -e /dev/kmsg || echo no-kmsg")
	if got := mustRun(t, spec); got != "00000000a80425fb\n1\nno-kmsg\n" {
		t.Errorf("default: got\n%s", got)
	}
}

// TestSeccomp: a RUN runs under Docker's default seccomp profile, as
// under BuildKit: new namespaces, keyctl and mount are refused with
// EPERM (busybox reports "Operation not permitted"), for root and for
// another user, with no_new_privs left off; --security=insecure has no
// filter.
func TestSeccomp(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	script := `grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr '\t' ' '
unshare -U true 2>&1 | grep -o 'Operation not permitted'
unshare -n true 2>&1 | grep -o 'Operation not permitted'
echo ok`
	want := "NoNewPrivs: 0\nSeccomp: 2\nOperation not permitted\nOperation not permitted\nok\n"
	if got := mustRun(t, shSpec(root, script)); got != want {
		t.Errorf("default, root: got\n%s\nwant\n%s", got, want)
	}
	spec := shSpec(root, script)
	spec.UID, spec.GID = 1000, 1000
	if got := mustRun(t, spec); got != want {
		t.Errorf("default, uid 1000: got\n%s\nwant\n%s", got, want)
	}
	spec = shSpec(root, "grep -E '^Seccomp:' /proc/self/status | tr '\\t' ' '; unshare -U true && echo unshared")
	spec.Insecure = true
	if got := mustRun(t, spec); got != "Seccomp: 0\nunshared\n" {
		t.Errorf("insecure: got\n%s", got)
	}
}

func TestNetwork(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root := newRootfs(t, rootfsOpts{})
	spec := shSpec(root, "grep : /proc/net/dev | while read -r name rest; do echo $name; done; ip link show lo | grep -c UP")
	if got := mustRun(t, spec); !strings.HasPrefix(got, "lo:\n") || strings.Count(got, ":\n") != 1 || !strings.HasSuffix(got, "1\n") {
		t.Errorf("network none: want only lo, up; got %q", got)
	}
	spec.Network = sandbox.NetworkHost
	spec.Args = []string{"cat", "/proc/net/dev"}
	got := mustRun(t, spec)
	host := hostInterfaces(t)
	for _, name := range host {
		if !strings.Contains(got, name+":") {
			t.Errorf("network host: interface %s missing from %q", name, got)
		}
	}
}

func TestSetupError(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing")
	_, _, err := run(t.Context(), shSpec(missing, "true"))
	var ee *sandbox.ExitError
	if err == nil || errors.As(err, &ee) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("got %v, want a setup error naming %s", err, missing)
	}
	t.Log(err)
	root := newRootfs(t, rootfsOpts{})
	writeFile(t, filepath.Join(root, "proc"), "not a directory")
	_, _, err = run(t.Context(), shSpec(root, "true"))
	if err == nil || errors.As(err, &ee) || !strings.Contains(err.Error(), "/proc") {
		t.Fatalf("got %v, want a setup error naming /proc", err)
	}
	t.Log(err)
}

func fileHash(t *testing.T, p string) [sha256.Size]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func hostInterfaces(t *testing.T) []string {
	t.Helper()
	out := readHostFile(t, "/proc/net/dev")
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok && !strings.Contains(name, "|") {
			names = append(names, strings.TrimSpace(name))
		}
	}
	slices.Sort(names)
	return names
}

// NetworkPrivate reaches a server on the host's routable address but not
// the host's loopback (directly or through the slirp gateway), resolves
// through slirp4netns's forwarder, and adds --add-host entries.
func TestPrivateNetwork(t *testing.T) {
	requireRoot(t)
	if err := sandbox.PrivateNetworkAvailable(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %v", err)
		}
		t.Skip(err)
	}
	t.Parallel()
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "reached") })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	port := l.Addr().(*net.TCPAddr).Port
	hostIP := routableAddr(t)
	root := newRootfs(t, rootfsOpts{})
	script := fmt.Sprintf(`wget -q -O - http://%s:%d/; echo
wget -q -O - http://127.0.0.1:%d/ 2>/dev/null || echo no-loopback
wget -q -O - http://10.0.2.2:%d/ 2>/dev/null || echo no-gateway-loopback
grep nameserver /etc/resolv.conf
grep -c myhost /etc/hosts`, hostIP, port, port, port)
	spec := shSpec(root, script)
	spec.Network = sandbox.NetworkPrivate
	spec.ExtraHosts = []string{"myhost 192.0.2.7"}
	want := "reached\nno-loopback\nno-gateway-loopback\nnameserver 10.0.2.3\n1\n"
	if got := mustRun(t, spec); got != want {
		t.Errorf("private network: got\n%s\nwant\n%s", got, want)
	}
	// With the host's network, the host's loopback is reachable.
	spec.Network = sandbox.NetworkHost
	spec.Args = []string{"wget", "-q", "-O", "-", fmt.Sprintf("http://127.0.0.1:%d/", port)}
	if got := mustRun(t, spec); got != "reached" {
		t.Errorf("host network: got %q", got)
	}
}

// routableAddr is an IPv4 address of this host that is not loopback.
func routableAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Fatal("no routable IPv4 address on this host")
	return ""
}
