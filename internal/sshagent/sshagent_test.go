package sshagent

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

func TestParseFlag(t *testing.T) {
	for in, want := range map[string]Config{
		"default":           {ID: "default"},
		"default=":          {ID: "default", Paths: []string{""}},
		"gh=/run/agent":     {ID: "gh", Paths: []string{"/run/agent"}},
		"key=/k/a,/k/b":     {ID: "key", Paths: []string{"/k/a", "/k/b"}},
		"x=/with=equals/ok": {ID: "x", Paths: []string{"/with=equals/ok"}},
	} {
		got, err := ParseFlag(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", in, diff)
		}
	}
	if _, err := ParseFlag("=/k"); err == nil {
		t.Errorf("an empty id is accepted")
	}
}

// writeKey writes a new ed25519 private key file in format "pkcs8" (PEM
// PRIVATE KEY) or "openssh" and returns its path and public key.
func writeKey(t *testing.T, dir, name, format string) (string, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if format == "openssh" {
		block, err = ssh.MarshalPrivateKey(priv, "")
	} else {
		var der []byte
		der, err = x509.MarshalPKCS8PrivateKey(priv)
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return p, sp
}

// listKeys connects to a over a pipe and lists its keys.
func listKeys(t *testing.T, a *Agent) []string {
	t.Helper()
	c1, c2 := net.Pipe()
	go a.Serve(t.Context(), c1)
	defer c2.Close()
	keys, err := agent.NewClient(c2).List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		out = append(out, ssh.FingerprintSHA256(k))
	}
	return out
}

// Key files: an agent holding them, which RUN steps cannot change.
func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	k1, pub1 := writeKey(t, dir, "k1", "pkcs8")
	k2, pub2 := writeKey(t, dir, "k2", "openssh")
	agents, err := New([]Config{{ID: "keys", Paths: []string{k1, k2}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	a := agents["keys"]
	want := []string{ssh.FingerprintSHA256(pub1), ssh.FingerprintSHA256(pub2)}
	if diff := cmp.Diff(want, listKeys(t, a)); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	// Signing works; changing does not.
	c1, c2 := net.Pipe()
	go a.Serve(t.Context(), c1)
	defer c2.Close()
	client := agent.NewClient(c2)
	sig, err := client.Sign(pub1, []byte("data"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pub1.Verify([]byte("data"), sig); err != nil {
		t.Errorf("signature: %v", err)
	}
	if err := client.RemoveAll(); err == nil {
		t.Errorf("RemoveAll succeeded")
	}
	if err := client.Lock([]byte("x")); err == nil {
		t.Errorf("Lock succeeded")
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := client.Add(agent.AddedKey{PrivateKey: priv}); err == nil {
		t.Errorf("Add succeeded")
	}
	if got := listKeys(t, a); len(got) != 2 {
		t.Errorf("the agent changed: %v", got)
	}
}

// A socket (given, or SSH_AUTH_SOCK for an id without paths) forwards the
// host agent's keys, read-only.
func TestSocket(t *testing.T) {
	dir := t.TempDir()
	_, pub := writeKey(t, dir, "k", "pkcs8")
	host := agent.NewKeyring()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := host.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				agent.ServeAgent(host, c)
			}()
		}
	}()
	hostKeys, _ := host.List()
	want := []string{ssh.FingerprintSHA256(hostKeys[0])}
	agents, err := New([]Config{{ID: "default"}, {ID: "other", Paths: []string{sock}}}, sock)
	if err != nil {
		t.Fatal(err)
	}
	for id, a := range agents {
		if diff := cmp.Diff(want, listKeys(t, a)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", id, diff)
		}
	}
	c1, c2 := net.Pipe()
	go agents["other"].Serve(t.Context(), c1)
	defer c2.Close()
	if err := agent.NewClient(c2).Remove(pub); err == nil {
		t.Errorf("Remove through the forward succeeded")
	}
	if keys, _ := host.List(); len(keys) != 1 {
		t.Errorf("host agent changed: %v", keys)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	key, _ := writeKey(t, dir, "k", "pkcs8")
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for name, c := range map[string]struct {
		confs    []Config
		authSock string
		want     string
	}{
		"no SSH_AUTH_SOCK": {[]Config{{ID: "default"}}, "", "make sure SSH_AUTH_SOCK is set"},
		"missing file":     {[]Config{{ID: "a", Paths: []string{filepath.Join(dir, "nope")}}}, "", "no such file"},
		"not a key":        {[]Config{{ID: "a", Paths: []string{bad}}}, "", "failed to parse " + bad},
		"two sockets":      {[]Config{{ID: "a", Paths: []string{sock, sock}}}, "", "only single socket allowed"},
		"key and socket":   {[]Config{{ID: "a", Paths: []string{key, sock}}}, "", "invalid combination of keys and sockets"},
		"duplicate id":     {[]Config{{ID: "a", Paths: []string{key}}, {ID: "a", Paths: []string{key}}}, "", `duplicate agent ID "a"`},
	} {
		_, err := New(c.confs, c.authSock)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", name, err, c.want)
		}
	}
}
