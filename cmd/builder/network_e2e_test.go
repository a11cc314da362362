package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/builder-dev/builder/internal/sandbox"
	"github.com/builder-dev/builder/internal/testenv"
)

// By default RUN is on a private network, as docker build's bridge: it
// reaches a server through the host's routable address but not the host's
// loopback; --network host reaches both; --add-host adds /etc/hosts
// entries; --network none reaches nothing.
func TestE2ENetworkDefaultIsPrivate(t *testing.T) {
	e := newEnv(t)
	if err := sandbox.PrivateNetworkAvailable(); err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "served") })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	port := l.Addr().(*net.TCPAddr).Port
	hostIP := hostRoutableIP(t)
	df := fmt.Sprintf(`FROM busybox:fixture
ARG N=0
RUN (wget -q -O - http://%s:%d/ || echo unreachable) > /routable; \
    (wget -q -O - http://127.0.0.1:%d/ || echo unreachable) > /loopback; \
    grep -c db.internal /etc/hosts > /hosts || true
`, hostIP, port, port)
	dir := e.context(df, nil)
	for _, tc := range []struct {
		name                      string
		flags                     []string
		routable, loopback, hosts string
	}{
		{"default", nil, "served", "unreachable\n", "0\n"},
		{"bridge+add-host", []string{"--network", "bridge", "--add-host", "db.internal:10.1.2.3"}, "served", "unreachable\n", "1\n"},
		{"host", []string{"--network", "host"}, "served", "served", "0\n"},
		{"none", []string{"--network", "none"}, "unreachable\n", "unreachable\n", "0\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(e.dir, "net-"+tc.name)
			args := append([]string{"build", "--progress", "plain", "--build-arg", "N=" + tc.name, "-o", "type=local,dest=" + out}, tc.flags...)
			_, errOut := e.mustRun(append(args, dir)...)
			for file, want := range map[string]string{"routable": tc.routable, "loopback": tc.loopback, "hosts": tc.hosts} {
				b, err := os.ReadFile(filepath.Join(out, file))
				if err != nil || string(b) != want {
					t.Errorf("/%s = %q (%v), want %q\n%s", file, b, err, want, errOut)
				}
			}
		})
	}
	_, errOut, err := e.run("build", "--add-host", "nocolon", dir)
	if err == nil || !strings.Contains(errOut, `--add-host "nocolon"`) {
		t.Errorf("bad --add-host: %v\n%s", err, errOut)
	}
	_, errOut, err = e.run("build", "--network", "overlay", dir)
	if err == nil || !strings.Contains(errOut, `--network "overlay"`) {
		t.Errorf("bad --network: %v\n%s", err, errOut)
	}
}

func hostRoutableIP(t *testing.T) string {
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
