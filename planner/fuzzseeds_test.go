package planner

import (
	"strings"
	"testing"

	"github.com/builder-dev/builder/internal/fuzztest"
)

// TestFuzzSeeds is the generator of testdata/fuzz/FuzzPlan: Dockerfiles
// that stress ARG/ENV expansion, stage references, --target, named
// contexts and ONBUILD triggers, with their fuzzed options (see
// fuzzOptions). It fails when a seed file is missing and rewrites them with
//
//	go test ./planner -run TestFuzzSeeds -update-fuzz-seeds
func TestFuzzSeeds(t *testing.T) {
	var seeds []fuzztest.Seed
	for _, s := range []struct{ name, df, target, options, onbuild string }{
		{"meta-args-in-from", "ARG IMG=busybox\nARG TAG\nFROM ${IMG}${TAG:+:$TAG} AS base\nARG IMG\nRUN echo $IMG\n", "", "TAG=latest", ""},
		{"undefined-arg-in-from", "FROM ${NOPE:-alpine}${X:?must be set}\n", "", "", ""},
		{"arg-env-shadowing", "FROM busybox\nARG A=arg\nENV A=env-$A B=${A}\nARG A=again\nRUN echo $A $B\nENV C=${A:-x}${B:+y}${D-z}\n", "", "A=cli\nUNUSED=1", ""},
		{"expansion-operators", "FROM busybox\nENV P=/a/b/c.tar.gz\nENV Q=${P#*/} R=${P##*/} S=${P%.*} T=${P%%.*} U=${P/b/x} V=${P//\\//_}\nWORKDIR $Q/${R}\n", "", "", ""},
		{"escaped-dollars", "FROM busybox\nENV A='$B' B=\"$A\" C=\\$A D=$$\nLABEL x=$A$B$C$D\n", "", "", ""},
		{"escape-backtick", "# escape=`\nFROM busybox\nENV A=`$B B=x`\ny\nCOPY `$A /$B\n", "", "", ""},
		{"unterminated-expansions", "FROM busybox\nENV A=${B\nENV C=${D:-${E:-${F\n", "", "", ""},
		{"nested-defaults", "FROM busybox\nARG A=${B:-${C:-${D:-deep}}}\nRUN echo $A\n", "", "C=c", ""},
		{"platform-args", "FROM --platform=$BUILDPLATFORM busybox AS build\nARG TARGETARCH TARGETPLATFORM\nRUN echo $TARGETARCH\nFROM --platform=${TARGETOS}/${TARGETARCH} alpine\nCOPY --from=build / /\n", "", "%linux/arm64/v8", ""},
		{"stage-refs-by-name-and-index", "FROM busybox AS a\nFROM a AS b\nCOPY --from=0 / /\nFROM b\nCOPY --from=a /x /y\nCOPY --from=B /x /z\nRUN --mount=from=a,target=/m --mount=type=cache,from=b,target=/c true\n", "", "", ""},
		{"stage-index-forward-and-self", "FROM busybox AS a\nCOPY --from=1 / /\nCOPY --from=0 / /\nFROM a\nCOPY --from=-1 / /\n", "", "", ""},
		{"stage-ref-expanded", "ARG S=a\nFROM busybox AS a\nFROM $S AS b\nARG F=a\nCOPY --from=$F / /\nRUN --mount=from=$F,target=/m true\n", "b", "S=b", ""},
		{"stage-self-reference", "FROM busybox AS a\nFROM b AS b\n", "b", "", ""},
		{"target-case-and-missing", "FROM busybox AS Build\nFROM alpine AS test\n", "BUILD", "", ""},
		{"target-unknown", "FROM busybox AS build\n", "buidl", "", ""},
		{"duplicate-stage-names", "FROM busybox AS a\nRUN one\nFROM alpine AS a\nRUN two\nFROM a\n", "", "", ""},
		{"named-contexts", "FROM alpine AS base\nFROM busybox\nCOPY --from=base / /\nCOPY --from=src /x /y\nRUN --mount=from=src,target=/s true\n", "", "@base=docker-image://busybox\n@src=/some/dir\n@alpine=docker-image://noenv", ""},
		{"context-dir-as-from", "FROM src\n", "", "@src=/dir", ""},
		{"onbuild-triggers", "FROM onbuild AS a\nRUN after\nFROM a\n", "", "A=x", "ARG A\nRUN echo $A\nCOPY --from=0 / /\nENV B=$A"},
		{"onbuild-bad-triggers", "FROM onbuild\n", "", "", "ONBUILD RUN x\nFROM busybox\nRUN <<EOF\nbody\nEOF\n\nNOTACOMMAND"},
		{"onbuild-from-stage", "FROM busybox AS a\nONBUILD RUN $X\nONBUILD COPY --from=a / /\nFROM a\nARG X=y\n", "", "", ""},
		{"copy-chown-chmod-expansion", "FROM busybox\nARG U=1000 G=${U} M=0755\nCOPY --chown=$U:$G --chmod=$M a b /$U/\nADD --chown=${U}:${NOPE:-0} http://example.com/$U /x\n", "", "", ""},
		{"run-mount-expansion", "FROM busybox\nARG ID=cache T=/c\nRUN --mount=type=cache,id=$ID,target=$T,uid=$UID --mount=type=secret,id=${S:-s},env=$E true\n", "", "UID=1\nE=TOKEN", ""},
		{"expose-ports-expansion", "FROM busybox\nARG P=80\nEXPOSE $P $P/udp ${Q:-443}/tcp\n", "", "P=80 81", ""},
		{"proxy-args", "FROM busybox\nRUN env\nARG HTTP_PROXY\nRUN env\n", "", "HTTP_PROXY=http://p\nno_proxy=x\nHTTPS_PROXY", ""},
		{"windows-base", "FROM windows\nENV A=1\nRUN dir\n", "", "%windows/amd64", ""},
		{"unresolvable-image", "FROM private/image:tag\n", "", "", ""},
		{"heredoc-expansion", "FROM busybox\nARG X=1\nCOPY <<EOF /$X\n$X ${X}\nEOF\nRUN <<-'EOT'\n\techo $X\n\tEOT\n", "", "", ""},
		{"env-doubling", "FROM busybox\nENV A=xx\n" + strings.Repeat("ENV A=$A$A\n", 8) + "LABEL l=$A$A$A$A\n", "", "", ""},
		{"meta-arg-doubling", "ARG A=xx\n" + strings.Repeat("ARG A=${A}${A}\n", 8) + "FROM busybox:$A\n", "", "", ""},
		{"check-comment-in-stage", "FROM busybox\n# check=skip=all\nENV A=1\n", "", "BUILDKIT_DOCKERFILE_CHECK=error=true", ""},
		{"lint-every-stage", "ARG V\nFROM --platform=linux/amd64 busybox:$V AS a\nENV k v\nCOPY $U . ./x\nEXPOSE 1:2/TCP [::1]:3:3\nFROM --platform=$TARGETPLATFORM scratch\nWORKDIR w\nCMD x\nCMD y\n", "", "!all\n#*\n#x", ""},
		{"lint-ignore-exclusions", "FROM scratch\nCOPY a b/../c /\nADD git@github.com:o/r.git https://x/y /\n", "", "#**\n#!a\n#[", ""},
	} {
		seeds = append(seeds, fuzztest.Seed{Name: s.name, Args: []any{[]byte(s.df), s.target, s.options, s.onbuild}})
	}
	fuzztest.CheckSeeds(t, "FuzzPlan", seeds)
}
