package gitsource

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// Agent is an SSH agent (builder build --ssh): Serve answers the agent
// protocol on one connection until it or ctx ends, and closes it.
type Agent interface {
	Serve(ctx context.Context, conn net.Conn) error
}

// WithAgent calls fn with the path of a socket serving agent, for git's
// ssh to authenticate to an ssh remote with, or with "" when r is no ssh
// remote or agent is nil. The socket lives in a private directory of the
// system's temporary directory (a short path) until fn returns.
func WithAgent(ctx context.Context, r *Ref, agent Agent, fn func(sock string) error) error {
	if r.Scheme != "ssh" || agent == nil {
		return fn("")
	}
	dir, err := os.MkdirTemp("", "builder-git-ssh-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return fmt.Errorf("ssh agent for %s: %w", r.Remote, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = agent.Serve(ctx, conn) // a failure ends only this connection
			}()
		}
	}()
	defer func() {
		ln.Close()
		cancel()
		wg.Wait()
	}()
	return fn(sock)
}
