package planner

import (
	"runtime"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// proxyArgs are predefined: usable in RUN without an ARG, and left out of
// cache keys unless the stage's ENV sets them (IsProxyArg).
var proxyArgs = []string{
	"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
	"ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
}

// IsProxyArg reports whether key is one of the predefined proxy args,
// which RUN sees but which never invalidate the cache.
func IsProxyArg(key string) bool { return slices.Contains(proxyArgs, key) }

// DefaultPath is the PATH BuildKit gives images built FROM scratch and
// RUN steps whose environment has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

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

// FormatPlatform formats p as "os/arch[/variant]", as BuildKit's
// TARGETPLATFORM does.
func FormatPlatform(p v1.Platform) string {
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
		{"BUILDPLATFORM", FormatPlatform(build)},
		{"BUILDOS", build.OS},
		{"BUILDOSVERSION", build.OSVersion},
		{"BUILDARCH", build.Architecture},
		{"BUILDVARIANT", build.Variant},
		{"TARGETPLATFORM", FormatPlatform(target)},
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
	if IsProxyArg(key) {
		return true
	}
	for _, kv := range predefinedArgs(target, build, "") {
		if kv[0] == key {
			return true
		}
	}
	return false
}
