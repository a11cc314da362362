package executor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/builder-dev/builder/internal/sandbox"
)

// SSHAgent is the agent of one `builder build --ssh` id. Serve answers the
// SSH agent protocol on conn, one connection from a RUN, until conn or
// ctx ends, and closes conn.
type SSHAgent interface {
	Serve(ctx context.Context, conn net.Conn) error
}

// prepareSSH serves the mount's agent on a new socket (mode and owner as
// the mount says) for the time of the step and binds it at the target.
// A missing agent skips the mount unless it is required: then BuildKit's
// errors, "no SSH key ... forwarded" without any --ssh, "unset ssh
// forward key" with others.
func (b *build) prepareSSH(ctx context.Context, rm *runMount, sm *stepMounts) error {
	id := rm.sshID()
	a, ok := b.e.opts.SSH[id]
	switch {
	case ok:
	case !rm.Required:
		return nil
	case len(b.e.opts.SSH) == 0:
		return fmt.Errorf("no SSH key %q forwarded from the client (builder build --ssh %s[=SOCKET|KEY] forwards it)", rm.ID, id)
	default:
		return fmt.Errorf("unset ssh forward key %s (builder build --ssh %s[=SOCKET|KEY] forwards it)", id, id)
	}
	dir, err := os.MkdirTemp(b.e.opts.TempDir, "ssh-")
	if err != nil {
		return err
	}
	sm.cleanup = append(sm.cleanup, func() error { return os.RemoveAll(dir) })
	srv, err := serveSSH(ctx, a, dir)
	if err != nil {
		return fmt.Errorf("RUN --mount=type=ssh,id=%s: %w", id, err)
	}
	sm.cleanup = append(sm.cleanup, srv.close)
	if err := os.Chown(srv.path, int(deref(rm.UID)), int(deref(rm.GID))); err != nil {
		return err
	}
	if err := os.Chmod(srv.path, os.FileMode(*rm.Mode&0o777)); err != nil {
		return err
	}
	sm.binds = append(sm.binds, sandbox.Bind{Source: srv.path, Target: rm.Target})
	return nil
}

// sshServer is an agent served on a unix socket.
type sshServer struct {
	path   string
	ln     *net.UnixListener
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// serveSSH listens on dir/agent.sock and serves a on every connection
// until close.
func serveSSH(ctx context.Context, a SSHAgent, dir string) (*sshServer, error) {
	ln, err := listenUnix(dir, "agent.sock")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &sshServer{path: filepath.Join(dir, "agent.sock"), ln: ln, cancel: cancel}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				_ = a.Serve(ctx, conn) // a failure only ends this connection
			}()
		}
	}()
	return s, nil
}

// close stops listening, ends every connection and waits for them.
func (s *sshServer) close() error {
	err := s.ln.Close()
	s.cancel()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// listenUnix listens on the unix socket dir/name. A path longer than a
// socket address holds (108 bytes) is reached through the directory's
// descriptor in /proc/self/fd.
func listenUnix(dir, name string) (*net.UnixListener, error) {
	addr := filepath.Join(dir, name)
	if len(addr) >= 100 {
		d, err := os.Open(dir)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		addr = fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), name)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false) // the directory goes as a whole
	return ln, nil
}
