#!/usr/bin/env bash
# Starts a private buildkitd for the BuildKit conformance tests
# (fixtures/conformance_test.go) and prints the line to eval:
#
#   eval "$(.ci/buildkitd.sh)"      # exports BUILDKIT_HOST
#
# buildkitd and buildctl are built from the Go module proxy at the version of
# github.com/moby/buildkit in go.mod, in a throwaway module, and cached in
# $BUILDKIT_CACHE (default /var/cache/builder-ci/buildkit-<version>) so a
# second run on the same machine skips the build. The daemon runs the OCI
# worker with Debian's runc (containerd worker off), its state in
# $BUILDKIT_STATE (default /run/builder-ci/buildkit) with its own unix socket
# and log file there. A daemon this script started before and that still
# answers is reused. Needs root, go, and runc on PATH. Only the export line
# goes to stdout; progress and errors go to stderr.
#
# Stop it: kill "$(cat /run/builder-ci/buildkit/buildkitd.pid)"
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
version=$(cd "$repo" && go list -m -f '{{.Version}}' github.com/moby/buildkit)
cache=${BUILDKIT_CACHE:-/var/cache/builder-ci/buildkit-$version}
state=${BUILDKIT_STATE:-/run/builder-ci/buildkit}
sock=$state/buildkitd.sock
addr=unix://$sock
log=$state/buildkitd.log
pidfile=$state/buildkitd.pid

say() { echo "buildkitd.sh: $*" >&2; }

build() {
	if [[ -x $cache/buildkitd && -x $cache/buildctl ]]; then
		say "using cached buildkit $version binaries in $cache"
		return
	fi
	say "building buildkitd and buildctl $version from the module proxy"
	local tmp
	tmp=$(mktemp -d)
	# shellcheck disable=SC2064 # expand $tmp now
	trap "rm -rf '$tmp'" EXIT
	cat >"$tmp/go.mod" <<-EOF
		module buildkit-ci-tools

		go $(go env GOVERSION | sed 's/^go//')

		require github.com/moby/buildkit $version
	EOF
	cat >"$tmp/tools.go" <<-EOF
		//go:build tools

		package tools

		import (
			_ "github.com/moby/buildkit/cmd/buildctl"
			_ "github.com/moby/buildkit/cmd/buildkitd"
		)
	EOF
	# buildkit's go.mod has replace directives, so "go install pkg@version"
	# refuses it; a module that requires it builds it with its own pins.
	(
		cd "$tmp"
		GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
			-ldflags "-X github.com/moby/buildkit/version.Version=$version" \
			-o "$tmp/bin/" github.com/moby/buildkit/cmd/buildkitd github.com/moby/buildkit/cmd/buildctl
	) >&2
	mkdir -p "$(dirname "$cache")"
	local staging=$cache.tmp.$$
	rm -rf "$staging"
	mkdir -p "$staging"
	mv "$tmp/bin/buildkitd" "$tmp/bin/buildctl" "$staging/"
	rm -rf "$cache"
	mv "$staging" "$cache"
	say "cached in $cache"
}

answers() {
	"$cache/buildctl" --addr "$addr" debug workers >/dev/null 2>&1
}

start() {
	runc=$(command -v runc) || {
		say "runc not found (apt-get install runc)"
		exit 1
	}
	mkdir -p "$state"
	chmod 0700 "$state"
	if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && answers; then
		say "reusing buildkitd (pid $(cat "$pidfile")) at $addr"
		return
	fi
	rm -f "$sock"
	# An empty config file: no /etc/buildkit/buildkitd.toml of the host.
	: >"$state/buildkitd.toml"
	say "starting buildkitd, log in $log"
	# From its state directory: a daemon reused by later runs must not
	# keep the caller's checkout as its working directory (git, which it
	# runs for Git sources, fails once that is deleted). exec keeps $! the
	# daemon's pid.
	# Its temporary mount points (buildkit-mount*, some left behind when a
	# build fails) go below its state directory, not into /tmp.
	mkdir -p "$state/tmp"
	(cd "$state" && TMPDIR="$state/tmp" exec nohup "$cache/buildkitd" \
		--config "$state/buildkitd.toml" \
		--root "$state/root" \
		--addr "$addr" \
		--oci-worker=true \
		--oci-worker-binary "$runc" \
		--oci-worker-net host \
		--containerd-worker=false \
		--allow-insecure-entitlement network.host \
		--allow-insecure-entitlement security.insecure \
		>"$log" 2>&1 </dev/null) &
	echo $! >"$pidfile"
	# A state kept from many earlier runs (tens of thousands of snapshots)
	# takes buildkitd about a minute to load before it answers.
	local pid=$! deadline=$((SECONDS + 180))
	until answers; do
		if ! kill -0 "$pid" 2>/dev/null; then
			say "buildkitd exited; its log:"
			tail -n 50 "$log" >&2 || true
			exit 1
		fi
		if ((SECONDS >= deadline)); then
			say "buildkitd did not answer within 180s; its log:"
			tail -n 50 "$log" >&2 || true
			exit 1
		fi
		sleep 0.5
	done
	say "buildkitd (pid $pid) ready at $addr"
}

build
start
echo "export BUILDKIT_HOST=$addr"
echo "export BUILDCTL=$cache/buildctl"
