package planner

import (
	"runtime"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// proxyArgs are predefined: usable in RUN without an ARG, and left out of
// cache keys unless the Dockerfile declares them.
var proxyArgs = []string{
	"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
	"ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
}

// defaultPath is what BuildKit sets when an image has no PATH.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func isZero(p v1.Platform) bool { return p.OS == "" && p.Architecture == "" }

// platforms returns the target and build platforms with defaults filled in.
func platforms(opts Options) (target, build v1.Platform) {
	build = opts.BuildPlatform
	if isZero(build) {
		build = v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	}
	target = opts.Platform
	if isZero(target) {
		target = build
	}
	return target, build
}

// formatPlatform formats p as "os/arch[/variant]", as BuildKit's
// TARGETPLATFORM does.
func formatPlatform(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// predefinedArgs are the automatic platform ARGs of the global scope.
func predefinedArgs(target, build v1.Platform, stage string) [][2]string {
	if stage == "" {
		stage = "default"
	}
	return [][2]string{
		{"BUILDPLATFORM", formatPlatform(build)},
		{"BUILDOS", build.OS},
		{"BUILDOSVERSION", build.OSVersion},
		{"BUILDARCH", build.Architecture},
		{"BUILDVARIANT", build.Variant},
		{"TARGETPLATFORM", formatPlatform(target)},
		{"TARGETOS", target.OS},
		{"TARGETOSVERSION", target.OSVersion},
		{"TARGETARCH", target.Architecture},
		{"TARGETVARIANT", target.Variant},
		{"TARGETSTAGE", stage},
	}
}

// frontendArgs are build args that configure the build rather than the
// Dockerfile, as BuildKit's frontend reads them: never "not consumed".
var frontendArgs = []string{"BUILDKIT_SANDBOX_HOSTNAME", "BUILDKIT_DOCKERFILE_CHECK", "BUILDKIT_SYNTAX"}

func isPredefined(key string, target, build v1.Platform) bool {
	if slices.Contains(frontendArgs, key) {
		return true
	}
	for _, p := range proxyArgs {
		if p == key {
			return true
		}
	}
	for _, kv := range predefinedArgs(target, build, "") {
		if kv[0] == key {
			return true
		}
	}
	return false
}
