// Package sshagent serves the SSH agents of `builder build --ssh` to RUN
// --mount=type=ssh, as docker buildx and BuildKit's session provider do:
// an id names either the host's agent socket, whose keys are forwarded, or
// private key files, which an in-memory agent holds for the build. RUN
// steps get a read-only view of it: they can list keys and sign, never
// add, remove or lock keys, so no step changes what a later one sees.
package sshagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// DefaultID is the id of a mount without id= and of `--ssh default`.
const DefaultID = "default"

// maxKeyFile bounds a key file, as BuildKit's provider reads it.
const maxKeyFile = 100 * 1024

// Config is one --ssh value: an id and the agent socket or key files it
// names (none: the SSH_AUTH_SOCK socket).
type Config struct {
	ID    string
	Paths []string
}

// ParseFlag parses a --ssh value as docker buildx does:
// default|ID[=SOCKET|KEY[,KEY...]].
func ParseFlag(s string) (Config, error) {
	id, paths, ok := strings.Cut(s, "=")
	c := Config{ID: id}
	if c.ID == "" {
		return Config{}, fmt.Errorf("invalid --ssh value %q: want default|ID[=SOCKET|KEY[,KEY]]", s)
	}
	if ok {
		c.Paths = strings.Split(paths, ",")
	}
	return c, nil
}

// Agent is the agent of one id.
type Agent struct {
	// socket is the host agent to forward; keys, when socket is empty,
	// the keys of key files.
	socket string
	keys   agent.ExtendedAgent
}

// New loads every configured agent by id; authSock is the host's
// SSH_AUTH_SOCK, used for a Config without paths. Key files are read and
// parsed now; a socket is dialled for each connection.
func New(confs []Config, authSock string) (map[string]*Agent, error) {
	out := make(map[string]*Agent, len(confs))
	for _, c := range confs {
		id := c.ID
		if id == "" {
			id = DefaultID
		}
		if _, ok := out[id]; ok {
			return nil, fmt.Errorf("duplicate agent ID %q", id)
		}
		a, err := load(c.Paths, authSock)
		if err != nil {
			return nil, fmt.Errorf("--ssh %s: %w", id, err)
		}
		out[id] = a
	}
	return out, nil
}

func load(paths []string, authSock string) (*Agent, error) {
	if len(paths) == 0 || len(paths) == 1 && paths[0] == "" {
		if authSock == "" {
			return nil, errors.New("invalid empty ssh agent socket: make sure SSH_AUTH_SOCK is set")
		}
		paths = []string{authSock}
	}
	a := &Agent{}
	keys := agent.NewKeyring().(agent.ExtendedAgent)
	nkeys := 0
	for _, p := range paths {
		if a.socket != "" {
			return nil, errors.New("only single socket allowed")
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if fi.Mode()&os.ModeSocket != 0 {
			a.socket = p
			continue
		}
		k, err := readKey(p)
		if err != nil {
			return nil, err
		}
		if err := keys.Add(agent.AddedKey{PrivateKey: k}); err != nil {
			return nil, fmt.Errorf("failed to add %s to agent: %w", p, err)
		}
		nkeys++
	}
	if a.socket != "" && nkeys > 0 {
		return nil, errors.New("invalid combination of keys and sockets")
	}
	if a.socket == "" {
		a.keys = keys
	}
	return a, nil
}

// readKey parses an unencrypted private key file (PEM, PKCS#8 or
// OpenSSH format).
func readKey(p string) (any, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("failed to open %s: %w", p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile))
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", p, err)
	}
	k, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", p, err)
	}
	return k, nil
}

// Serve answers the agent protocol on conn, a connection from a RUN,
// until it or ctx ends, and closes it.
func (a *Agent) Serve(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	ag := a.keys
	if a.socket != "" {
		d := net.Dialer{Timeout: 2 * time.Second}
		up, err := d.DialContext(ctx, "unix", a.socket)
		if err != nil {
			return fmt.Errorf("failed to connect to %s: %w", a.socket, err)
		}
		defer up.Close()
		ag = agent.NewClient(up)
	}
	err := agent.ServeAgent(readOnly{ag}, conn)
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// readOnly refuses every request that changes the agent, as BuildKit's
// provider does (the client only learns that it failed).
type readOnly struct {
	agent.ExtendedAgent
}

func (readOnly) Add(agent.AddedKey) error {
	return errors.New("adding new keys not allowed by builder")
}

func (readOnly) Remove(ssh.PublicKey) error {
	return errors.New("removing keys not allowed by builder")
}

func (readOnly) RemoveAll() error { return errors.New("removing keys not allowed by builder") }

func (readOnly) Lock([]byte) error { return errors.New("locking agent not allowed by builder") }

func (readOnly) Extension(string, []byte) ([]byte, error) {
	return nil, errors.New("extensions not allowed by builder")
}
