package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// slirpReadyTimeout bounds the wait for slirp4netns to configure the
// sandbox's network.
const slirpReadyTimeout = 15 * time.Second

// The addresses slirp4netns gives the sandbox: its DNS forwarder. The
// gateway, 10.0.2.2, does not lead to the host's loopback
// (--disable-host-loopback).
const slirpDNS = "10.0.2.3"

// PrivateNetworkAvailable says whether NetworkPrivate can be used here:
// it needs Debian's slirp4netns on PATH and a /dev/net/tun it may open
// (mode 0666 on a usual host; a rootless builder is not root outside its
// user namespace).
func PrivateNetworkAvailable() error {
	if _, err := exec.LookPath("slirp4netns"); err != nil {
		return fmt.Errorf("slirp4netns not found (apt-get install slirp4netns): %w", err)
	}
	if err := unix.Access("/dev/net/tun", unix.R_OK|unix.W_OK); err != nil {
		return fmt.Errorf("slirp4netns cannot open /dev/net/tun: %w", err)
	}
	return nil
}

// slirp connects a sandbox's network namespace to the outside through
// slirp4netns, a user-mode TCP/IP stack: connections leave from the
// builder's own network namespace as ordinary sockets, so RUN reaches
// what the builder reaches, except the host's loopback.
type slirp struct {
	cmd    *exec.Cmd
	exitW  *os.File // closing it makes slirp4netns exit
	stderr *bytes.Buffer
}

// startSlirp starts slirp4netns for the network namespace of pid and waits
// until it has configured tap0 (address 10.0.2.100, gateway 10.0.2.2, MTU
// 65520) and lo.
func startSlirp(ctx context.Context, pid int) (*slirp, error) {
	bin, err := exec.LookPath("slirp4netns")
	if err != nil {
		return nil, fmt.Errorf("private network: %w", PrivateNetworkAvailable())
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer readyR.Close()
	exitR, exitW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		return nil, err
	}
	s := &slirp{exitW: exitW, stderr: &bytes.Buffer{}}
	// ExtraFiles start at fd 3.
	s.cmd = exec.Command(bin, "--configure", "--mtu=65520", "--disable-host-loopback",
		"--enable-sandbox", "--enable-seccomp", "--ready-fd=3", "--exit-fd=4", strconv.Itoa(pid), "tap0")
	s.cmd.ExtraFiles = []*os.File{readyW, exitR}
	s.cmd.Stdout, s.cmd.Stderr = io.Discard, s.stderr
	err = s.cmd.Start()
	readyW.Close()
	exitR.Close()
	if err != nil {
		exitW.Close()
		return nil, fmt.Errorf("private network: start slirp4netns: %w", err)
	}
	if err := s.waitReady(ctx, readyR); err != nil {
		_ = s.stop()
		return nil, err
	}
	return s, nil
}

func (s *slirp) waitReady(ctx context.Context, ready *os.File) error {
	got := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := ready.Read(b)
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			return fmt.Errorf("private network: slirp4netns exited before the network was ready: %s", s.message())
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(slirpReadyTimeout):
		return fmt.Errorf("private network: slirp4netns not ready after %s: %s", slirpReadyTimeout, s.message())
	}
}

func (s *slirp) message() string {
	msg := strings.TrimSpace(s.stderr.String())
	if msg == "" {
		return "no message"
	}
	return msg
}

// stop makes slirp4netns exit and reaps it.
func (s *slirp) stop() error {
	s.exitW.Close()
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	return nil
}

// privateResolvConf is the host's resolv.conf with slirp4netns's DNS
// forwarder as the only nameserver: the host's own may be on its loopback,
// which the sandbox cannot reach.
func privateResolvConf(host []byte) []byte {
	var out bytes.Buffer
	fmt.Fprintf(&out, "nameserver %s\n", slirpDNS)
	for _, l := range strings.Split(string(host), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && (f[0] == "search" || f[0] == "options") {
			out.WriteString(l + "\n")
		}
	}
	return out.Bytes()
}
