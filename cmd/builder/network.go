package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/builder-dev/builder/internal/sandbox"
)

// runNetwork maps --network to the default network of RUN steps and says
// whether RUN --network=host is allowed:
//
//	default, bridge  a private network with outbound access (slirp4netns),
//	                 as docker build's bridge: the host's loopback is not
//	                 reachable; without slirp4netns, no network (said once)
//	host             the host's network; asking for it is the network.host
//	                 entitlement, as buildx grants it for --network host
//	none             loopback only
//
// Under isolation chroot RUN has no network namespace: default and host
// are the builder's network, none is refused.
func runNetwork(flag string, allow []string, iso isolation, notice func(string)) (mode string, allowHost bool, err error) {
	allowHost = contains(allow, "network.host")
	if iso.mode == sandbox.IsolationChroot {
		switch flag {
		case "", "default", "bridge", "host":
			return sandbox.NetworkHost, true, nil
		case "none":
			return "", false, fmt.Errorf("--network none needs a network namespace, which isolation chroot does not have")
		}
	}
	switch flag {
	case "", "default", "bridge":
		if err := sandbox.PrivateNetworkAvailable(); err != nil {
			notice(fmt.Sprintf("[warning] RUN steps have no network: the default private network needs %v; pass --network host to use the host's network", err))
			return sandbox.NetworkNone, allowHost, nil
		}
		return sandbox.NetworkPrivate, allowHost, nil
	case "host":
		return sandbox.NetworkHost, true, nil
	case "none":
		return sandbox.NetworkNone, allowHost, nil
	}
	return "", false, fmt.Errorf("--network %q: want default, bridge, host or none", flag)
}

// extraHosts parses --add-host HOST:IP values (docker's syntax; an IPv6
// address may follow the first colon) into "HOST IP" lines.
func extraHosts(vals []string) ([]string, error) {
	var out []string
	for _, v := range vals {
		host, ip, ok := strings.Cut(v, ":")
		if !ok {
			host, ip, ok = strings.Cut(v, "=")
		}
		ip = strings.Trim(ip, "[]")
		if !ok || host == "" || strings.ContainsAny(host, " \t#") || net.ParseIP(ip) == nil {
			return nil, fmt.Errorf("--add-host %q: want HOST:IP", v)
		}
		out = append(out, host+" "+ip)
	}
	return out, nil
}
