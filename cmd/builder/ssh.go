package main

import (
	"os"

	"github.com/builder-dev/builder/executor"
	"github.com/builder-dev/builder/internal/sshagent"
)

// sshAgents loads the --ssh agents as docker buildx does:
// default|ID[=SOCKET|KEY[,KEY]], an id alone being the SSH_AUTH_SOCK
// agent. Key files are read now and held in memory only.
func sshAgents(specs []string) (map[string]executor.SSHAgent, error) {
	confs := make([]sshagent.Config, 0, len(specs))
	for _, s := range specs {
		c, err := sshagent.ParseFlag(s)
		if err != nil {
			return nil, err
		}
		confs = append(confs, c)
	}
	agents, err := sshagent.New(confs, os.Getenv("SSH_AUTH_SOCK"))
	if err != nil {
		return nil, err
	}
	out := make(map[string]executor.SSHAgent, len(agents))
	for id, a := range agents {
		out[id] = a
	}
	return out, nil
}
