package parser

import (
	"strings"
	"testing"

	"github.com/builder-dev/builder/internal/fuzztest"
)

// TestFuzzSeeds is the generator of testdata/fuzz/FuzzParse: hostile
// Dockerfile shapes the parser's test cases do not have. It fails when a
// seed file is missing and rewrites them with
//
//	go test ./parser -run TestFuzzSeeds -update-fuzz-seeds
func TestFuzzSeeds(t *testing.T) {
	var seeds []fuzztest.Seed
	for _, s := range []struct{ name, src string }{
		{"bom-crlf-mixed", "\ufeffFROM scratch\r\nRUN a \\\r\n  b\nCMD [\"x\"]\r\n"},
		{"check-comment-after-first-line", "FROM scratch\n# check=skip=JSONArgsRecommended\nCMD a\n"},
		{"check-directive-bad", "# check=skip=all;error=maybe;experimental=\nFROM scratch\n"},
		{"escape-backtick-continuation", "# escape=`\nFROM scratch\nRUN a `\n  b `\n\n  c\n"},
		{"escape-directive-twice", "# escape=`\n# escape=\\\nFROM scratch\n"},
		{"escape-invalid", "# escape=x\nFROM scratch\n"},
		{"syntax-and-unknown-directive", "# syntax=docker/dockerfile:1\n# foo=bar\nFROM scratch\n"},
		{"empty-continuation", "FROM scratch\nRUN a \\\n\n\\\n  b\n"},
		{"continuation-at-eof", "FROM scratch\nRUN a \\"},
		{"heredoc-many", "FROM scratch\nRUN <<A <<-B cat\na\nA\n\tb\n\tB\nCOPY <<EOF <<\"Q\" /x\n$X\nEOF\n$Y\nQ\n"},
		{"heredoc-unterminated-at-eof", "FROM scratch\nRUN <<EOF\nno end"},
		{"heredoc-shebang", "FROM scratch\nRUN <<EOT\n#!/usr/bin/env python3\nprint(1)\nEOT\n"},
		{"heredoc-empty-name", "FROM scratch\nRUN <<\"\"\nx\n\n"},
		{"json-unterminated", "FROM scratch\nCMD [\"a\", \"b\nENTRYPOINT [\"\\u0000\"]\n"},
		{"json-nested", "FROM scratch\nCMD [[\"a\"], {\"b\": 1}]\n"},
		{"onbuild-onbuild", "FROM scratch\nONBUILD ONBUILD RUN x\n"},
		{"onbuild-from", "FROM scratch\nONBUILD FROM alpine\nONBUILD MAINTAINER me\n"},
		{"from-flags", "FROM --platform=$BUILDPLATFORM --foo=bar a AS b AS c\n"},
		{"from-as-keyword-only", "FROM a AS\n"},
		{"arg-forms", "ARG A B=\"x y\" C='z' D=\nFROM scratch\nARG =x\nARG \"\"=\n"},
		{"env-legacy-and-kv", "FROM scratch\nENV A b c\nENV B=\"x\\\"y\" C=$B D\\ E=f\n"},
		{"label-quotes", "FROM scratch\nLABEL \"a b\"=\"c\\\"d\" e='f' g\n"},
		{"run-mounts-hostile", "FROM scratch\nRUN --mount=type=bind,source=../../,target=/,rw --mount=type=cache,id=/..,target=/c,sharing=weird --mount=type=secret,id=,env= --mount=type=tmpfs,size=-1 true\n"},
		{"run-network-security", "FROM scratch\nRUN --network=none --security=insecure --mount=type=ssh true\n"},
		{"copy-flags-hostile", "FROM scratch\nCOPY --from= --chown=-1:-1 --chmod=99999 --link --parents --exclude=** --exclude=[ a b /c/\nADD --checksum=sha256:zz --keep-git-dir=maybe https://x/y.git /z\n"},
		{"healthcheck-hostile", "FROM scratch\nHEALTHCHECK --interval=-1s --timeout=0 --retries=-5 --start-period=1e9h CMD x\nHEALTHCHECK NONE extra\n"},
		{"expose-volume-shell", "FROM scratch\nEXPOSE 80/tcp 1-65535/udp $P\nVOLUME [\"/a\" \"/b\"]\nSHELL [\"\"]\nSTOPSIGNAL SIGWHAT\n"},
		{"maintainer-workdir-user", "FROM scratch\nMAINTAINER \nWORKDIR relative/$X\nUSER :\n"},
		{"nul-bytes", "FROM scratch\x00\nRUN a\x00b\n"},
		{"invalid-utf8", "FROM \xff\xfe\nRUN \xc3\x28\n"},
		{"only-directives", "# syntax=x\n# escape=\\\n"},
		{"many-stages-same-name", "FROM scratch AS a\nFROM a AS a\nFROM A AS a\nCOPY --from=a / /\n"},
		{"long-line", "FROM scratch\nRUN " + strings.Repeat("x", 4000) + "\n"},
		{"many-continuations", "FROM scratch\nRUN a" + strings.Repeat(" \\\n b", 200) + "\n"},
		{"lowercase-everything", "from scratch as Build\nrun true\nCmd x\n"},
	} {
		seeds = append(seeds, fuzztest.Seed{Name: s.name, Args: []any{[]byte(s.src)}})
	}
	fuzztest.CheckSeeds(t, "FuzzParse", seeds)
}
