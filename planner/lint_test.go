package planner

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/builder-dev/builder/parser"
	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The expected rule names, lines and messages of these tests follow
// buildkit v0.34.2: frontend/dockerfile/dockerfile_check_test.go where it
// has the case, else dockerfile2llb's convert.go and validations.go.

type lintFinding struct {
	Line          int
	Rule, Message string
}

// lintImages are the base images of the lint tests: each has a layer
// (buildkit checks the platform of images that are not empty) and a
// platform.
func lintImages() map[string]*v1.ConfigFile {
	layer := v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{{Algorithm: "sha256", Hex: strings.Repeat("1", 64)}}}
	img := func(arch string, cfg v1.Config) *v1.ConfigFile {
		return &v1.ConfigFile{OS: "linux", Architecture: arch, RootFS: layer, Config: cfg}
	}
	return map[string]*v1.ConfigFile{
		"busybox":        img("amd64", v1.Config{Env: []string{"PATH=/usr/bin:/bin", "BB=1"}}),
		"busybox:latest": img("amd64", v1.Config{}),
		"shelled":        img("amd64", v1.Config{Env: []string{"PATH=/bin"}, Shell: []string{"/bin/bash", "-c"}}),
		"armonly":        img("arm64", v1.Config{}),
		"empty":          {OS: "linux", Architecture: "arm64", RootFS: v1.RootFS{Type: "layers"}},
	}
}

// planLint plans src (parsed with ParseLint, so the check directive
// applies) for linux/amd64 and returns the warnings of the plan's rules
// (the parser's own are left out) and the plan's error.
func planLint(t *testing.T, src string, opts Options) ([]lintFinding, error) {
	t.Helper()
	df, lint, err := parser.ParseLint(strings.NewReader(src), "Dockerfile", parser.LintOptions{})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	parsed := len(lint.Warnings())
	images := lintImages()
	opts.ResolveImage = func(_ context.Context, ref string, _ v1.Platform) (*ImageInfo, error) {
		cfg, ok := images[ref]
		if !ok {
			return nil, fmt.Errorf("pull access denied for %s", ref)
		}
		return &ImageInfo{Ref: ref, Digest: "sha256:" + strings.Repeat("a", 64), Config: cfg}, nil
	}
	opts.BuildPlatform = amd64
	opts.Lint = lint.Linter()
	_, err = New(t.Context(), df, opts)
	var got []lintFinding
	for _, w := range lint.Warnings() {
		got = append(got, lintFinding{w.Line, w.Rule, w.Message})
	}
	if len(got) < parsed {
		t.Fatalf("the plan lost warnings of the parser")
	}
	return without(got, "StageNameCasing", "FromAsCasing", "ConsistentInstructionCasing"), err
}

func without(fs []lintFinding, rules ...string) []lintFinding {
	var out []lintFinding
	for _, f := range fs {
		if !strings.Contains(strings.Join(rules, ","), f.Rule) {
			out = append(out, f)
		}
	}
	return out
}

type lintCase struct {
	name, src string
	opts      Options
	want      []lintFinding
	err       string // the plan's error, if it fails
}

var windows = v1.Platform{OS: "windows", Architecture: "amd64"}

func runLintCases(t *testing.T, tests []lintCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planLint(t, tt.src, tt.opts)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("plan: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("plan error = %v, want one containing %q", err, tt.err)
			}
		})
	}
}

func undefinedVar(line int, msg string) lintFinding { return lintFinding{line, "UndefinedVar", msg} }

func TestLintUndefinedVar(t *testing.T) {
	runLintCases(t, []lintCase{
		{name: "declared arg without value", src: "FROM scratch\nARG foo\nCOPY Dockerfile${foo} .\n"},
		{name: "arg of the base stage", src: "FROM busybox AS base\nARG foo=Dockerfile\n\nFROM base\nCOPY $foo .\n"},
		{name: "RUN is the shell's", src: "FROM busybox\nRUN echo $PATH $NOPE\n"},
		{name: "used before its ARG", src: "FROM busybox\nCOPY $foo .\nARG foo=bar\nRUN echo $foo\n",
			want: []lintFinding{undefinedVar(2, "Usage of undefined variable '$foo'")}},
		{name: "suggestion among args", src: "FROM busybox\nARG DIR_BINARIES=binaries/\nARG DIR_ASSETS=assets/\nARG DIR_CONFIG=config/\nCOPY $DIR_ASSET .\n\t",
			want: []lintFinding{undefinedVar(5, "Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)")}},
		{name: "suggestion from the image env", src: "FROM busybox\nENV PATH=$PAHT:/tmp/bin\n",
			want: []lintFinding{undefinedVar(2, "Usage of undefined variable '$PAHT' (did you mean $PATH?)")}},
		{name: "scratch has the default PATH", src: "FROM scratch\nWORKDIR /$PAHT\n",
			want: []lintFinding{undefinedVar(2, "Usage of undefined variable '$PAHT' (did you mean $PATH?)")}},
		{name: "image env", src: "FROM busybox\nCOPY $BB /\n"},
		{name: "env of the same instruction is not set yet", src: "FROM scratch\nENV A=1 B=$A\n",
			want: []lintFinding{undefinedVar(2, "Usage of undefined variable '$A'")}},
		{name: "args of one ARG are declared in turn", src: "FROM busybox\nARG A=1 B=$A\n"},
		{name: "ARG default", src: "FROM busybox\nARG A=$NOPE\n",
			want: []lintFinding{undefinedVar(2, "Usage of undefined variable '$NOPE'")}},
		{name: "ARG default a build arg overrides", src: "FROM busybox\nARG A=$NOPE\n",
			opts: Options{BuildArgs: map[string]*string{"A": str("x")}}},
		{name: "meta ARG not declared in the stage", src: "ARG G=1\nFROM scratch\nCOPY $G /\n",
			want: []lintFinding{undefinedVar(3, "Usage of undefined variable '$G'")}},
		{name: "meta ARG declared in the stage", src: "ARG G=1\nFROM busybox\nARG G\nCOPY $G /\n"},
		{name: "sbom args", src: "FROM busybox\nCOPY $BUILDKIT_SBOM_SCAN_STAGE$BUILDKIT_SBOM_SCAN_CONTEXT /\n"},
		{name: "mount option", src: "FROM busybox\nRUN --mount=type=cache,target=/$CACHE true\n",
			want: []lintFinding{undefinedVar(2, "Usage of undefined variable '$CACHE'")}},
		{name: "each word", src: "FROM scratch\nCOPY --chown=$U $U /\n",
			want: []lintFinding{undefinedVar(2, "Usage of undefined variable '$U'"), undefinedVar(2, "Usage of undefined variable '$U'")}},
		{name: "check comment", src: "FROM scratch\n# check=skip=UndefinedVar\nCOPY $a /\nCOPY $b /\n",
			want: []lintFinding{undefinedVar(4, "Usage of undefined variable '$b'")}},
		{name: "stage not built", src: "FROM scratch AS first\nCOPY $foo .\n\nFROM scratch AS second\nCOPY $bar .\n",
			want: []lintFinding{undefinedVar(5, "Usage of undefined variable '$bar'")}},
		{name: "every stage of a check", src: "FROM scratch AS first\nCOPY $foo .\n\nFROM scratch AS second\nCOPY $bar .\n",
			opts: Options{AllStages: true},
			want: []lintFinding{undefinedVar(2, "Usage of undefined variable '$foo'"), undefinedVar(5, "Usage of undefined variable '$bar'")}},
	})
}

func TestLintFrom(t *testing.T) {
	undeclared := func(line int, msg string) lintFinding { return lintFinding{line, "UndefinedArgInFrom", msg} }
	invalid := func(line int, msg string) lintFinding { return lintFinding{line, "InvalidDefaultArgInFrom", msg} }
	redundant := func(line int, msg string) lintFinding { return lintFinding{line, "RedundantTargetPlatform", msg} }
	constant := func(line int, msg string) lintFinding {
		return lintFinding{line, "FromPlatformFlagConstDisallowed", msg}
	}
	runLintCases(t, []lintCase{
		{name: "meta ARG", src: "ARG base=scratch\nFROM $base\n"},
		{name: "predefined arg", src: "FROM --platform=$BUILDPLATFORM scratch\n"},
		{name: "declared without value", src: "ARG DEBUG\nFROM scratch${DEBUG}\n"},
		{name: "undeclared", src: "ARG tag=latest\nFROM busybox:${tag}${version} AS b\n",
			want: []lintFinding{undeclared(2, "FROM argument 'version' is not declared")}},
		{name: "undeclared platform", src: "FROM --platform=$BULIDPLATFORM scratch\n",
			want: []lintFinding{undeclared(1, "FROM argument 'BULIDPLATFORM' is not declared (did you mean BUILDPLATFORM?)")},
			err:  "BULIDPLATFORM"},
		{name: "undeclared in a stage not built", src: "FROM scratch${X} AS a\nFROM scratch\n",
			want: []lintFinding{undeclared(1, "FROM argument 'X' is not declared")}},
		{name: "redundant", src: "FROM --platform=$TARGETPLATFORM scratch\n",
			want: []lintFinding{redundant(1, "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior")}},
		{name: "redundant braces", src: "FROM --platform=${TARGETPLATFORM} scratch\n",
			want: []lintFinding{redundant(1, "Setting platform to predefined ${TARGETPLATFORM} in FROM is redundant as this is the default behavior")}},
		{name: "redundant skipped", src: "# check=skip=RedundantTargetPlatform\nFROM --platform=$TARGETPLATFORM scratch\n"},
		{name: "not redundant with more", src: "FROM --platform=${TARGETPLATFORM}${X:-} scratch\n",
			want: []lintFinding{undeclared(1, "FROM argument 'X' is not declared")}},
		{name: "constant", src: "FROM --platform=linux/amd64 scratch\n",
			want: []lintFinding{constant(1, `FROM --platform flag should not use constant value "linux/amd64"`)}},
		{name: "constant named for its arch", src: "FROM --platform=linux/amd64 scratch AS my_amd64_stage\n"},
		{name: "constant named for its os", src: "FROM --platform=linux/amd64 scratch AS linux\n"},
		{name: "constant named for its normalized arch", src: "FROM --platform=linux/x86_64 scratch AS amd64\n"},
		{name: "invalid default", src: "ARG VERSION\nFROM busybox:$VERSION\n",
			opts: Options{BuildArgs: map[string]*string{"VERSION": str("latest")}},
			want: []lintFinding{invalid(2, "Default value for ARG busybox:$VERSION results in empty or invalid base image name")}},
		{name: "invalid default name", src: "ARG IMAGE\nFROM $IMAGE\n",
			opts: Options{BuildArgs: map[string]*string{"IMAGE": str("busybox")}},
			want: []lintFinding{invalid(2, "Default value for ARG $IMAGE results in empty or invalid base image name")}},
		{name: "invalid default suffix", src: "ARG SFX=\"box:\"\nFROM busy${SFX}\n",
			opts: Options{BuildArgs: map[string]*string{"SFX": str("box")}},
			want: []lintFinding{invalid(2, "Default value for ARG busy${SFX} results in empty or invalid base image name")}},
		{name: "valid default", src: "ARG VERSION=\"latest\"\nFROM busybox:${VERSION}\n"},
		{name: "empty default suffix", src: "ARG V=\"\"\nFROM busybox${V}\n"},
	})
}

func TestLintInstructions(t *testing.T) {
	relative := func(line int, dir string) lintFinding {
		return lintFinding{line, "WorkdirRelativePath", fmt.Sprintf("Relative workdir %q can have unexpected results if the base image changes", dir)}
	}
	multiple := func(line int, name string) lintFinding {
		return lintFinding{line, "MultipleInstructionsDisallowed", fmt.Sprintf("Multiple %s instructions should not be used in the same stage because only the last one will be used", name)}
	}
	jsonArgs := func(line int, name string) lintFinding {
		return lintFinding{line, "JSONArgsRecommended", fmt.Sprintf("JSON arguments recommended for %s to prevent unintended behavior related to OS signals", name)}
	}
	legacy := func(line int, name string) lintFinding {
		return lintFinding{line, "LegacyKeyValueFormat", fmt.Sprintf("%q should be used instead of legacy %q format", name+" key=value", name+" key value")}
	}
	runLintCases(t, []lintCase{
		{name: "relative workdir", src: "FROM scratch\nWORKDIR app/\nWORKDIR sub\n", want: []lintFinding{relative(2, "app/")}},
		{name: "workdir of the base stage", src: "FROM scratch AS a\nWORKDIR /app\n\nFROM a AS b\nWORKDIR subdir/\n"},
		{name: "expanded workdir", src: "FROM scratch\nENV D=/app\nWORKDIR $D\n"},
		{name: "workdir undefined", src: "FROM scratch\nWORKDIR $D\n",
			want: []lintFinding{undefinedVar(2, "Usage of undefined variable '$D'"), relative(2, "")}},
		{name: "workdir skipped", src: "FROM scratch\n# check=skip=WorkdirRelativePath\nWORKDIR app/\n"},
		{name: "windows workdir with a drive", src: "FROM scratch\nWORKDIR C:\\\\app\n", opts: Options{Platform: windows}},
		{name: "windows relative workdir", src: "FROM scratch\nWORKDIR app\n", opts: Options{Platform: windows}, want: []lintFinding{relative(2, "app")}},
		{name: "multiple", src: "FROM scratch\nENTRYPOINT [\"/a\"]\nENTRYPOINT [\"/b\"]\nCMD [\"/a\"]\nCMD [\"/b\"]\nHEALTHCHECK CMD [\"/a\"]\nHEALTHCHECK CMD [\"/b\"]\n",
			want: []lintFinding{multiple(2, "ENTRYPOINT"), multiple(4, "CMD"), multiple(6, "HEALTHCHECK")}},
		{name: "multiple across other steps", src: "FROM scratch\nENTRYPOINT [\"/a\"]\nCOPY <<EOF /a.txt\nhi\nEOF\nENTRYPOINT [\"/b\"]\n",
			want: []lintFinding{multiple(2, "ENTRYPOINT")}},
		{name: "multiple per stage", src: "FROM scratch AS a\nENTRYPOINT [\"/a\"]\nCMD [\"/a\"]\n\nFROM a AS b\nENTRYPOINT [\"/b\"]\nCMD [\"/b\"]\n"},
		{name: "shell form", src: "FROM scratch\nCMD mycommand\nENTRYPOINT mycommand\n", want: []lintFinding{jsonArgs(2, "CMD"), jsonArgs(3, "ENTRYPOINT")}},
		{name: "shell form after SHELL", src: "FROM scratch\nSHELL [\"/usr/bin/customshell\"]\nCMD mycommand\n"},
		{name: "shell form after SHELL of the base stage", src: "FROM scratch AS base\nSHELL [\"/usr/bin/customshell\"]\n\nFROM base\nENTRYPOINT mycommand\n"},
		{name: "shell form on an image with a shell", src: "FROM shelled\nCMD mycommand\n"},
		{name: "legacy format", src: "FROM scratch\nENV testkey value\nLABEL key value\n", want: []lintFinding{legacy(2, "ENV"), legacy(3, "LABEL")}},
		{name: "key=value", src: "FROM scratch\nENV testkey=value\nLABEL key=value\n"},
		{name: "legacy format in a stage not built", src: "FROM scratch AS a\n\nFROM a AS b\nENV testkey value\nLABEL key value\n\nFROM a AS c\n"},
		{name: "legacy format in every stage of a check", src: "FROM scratch AS a\n\nFROM a AS b\nENV testkey value\nLABEL key value\n\nFROM a AS c\n",
			opts: Options{AllStages: true}, want: []lintFinding{legacy(4, "ENV"), legacy(5, "LABEL")}},
		{name: "legacy format skipped", src: "FROM scratch\n# check=skip=LegacyKeyValueFormat\nENV testkey value\n# check=skip=LegacyKeyValueFormat\nLABEL key value\n"},
		{name: "ONBUILD triggers at the FROM line", src: "FROM scratch AS base\nONBUILD ENV a b\n\nFROM base\n",
			want: []lintFinding{legacy(4, "ENV")}},
	})
}

func TestLintSecrets(t *testing.T) {
	src := `# check=skip=InvalidDefinitionDescription

FROM scratch
ARG SECRET_PASSPHRASE
ENV SUPER_Secret=foo
ENV password=bar secret=baz
ARG super_duper_secret_token=foo auth=bar
ENV apikey=bar sunflower=foo
ENV git_key=
ENV PUBLIC_KEY=
ARG public_token
ARG SECRET_PASSPHRASE_FILE
ENV password_file=bar secret_File=baz
ARG AUTH_MODULE_VERSION
# check=skip=SecretsUsedInArgOrEnv // allow secret in environment
ENV password=bar
# check=skip=SecretsUsedInArgOrEnv // allow secret in arg
ARG password
# check=skip=all // is local to only this instruction
ENV alternate_password=bar
# check=skip=all // is local to only this instruction
ARG alternate_password
`
	secret := func(line int, inst, key string) lintFinding {
		return lintFinding{line, "SecretsUsedInArgOrEnv", fmt.Sprintf("Do not use ARG or ENV instructions for sensitive data (%s %q)", inst, key)}
	}
	runLintCases(t, []lintCase{{name: "upstream", src: src, want: []lintFinding{
		secret(4, "ARG", "SECRET_PASSPHRASE"), secret(5, "ENV", "SUPER_Secret"),
		secret(6, "ENV", "password"), secret(6, "ENV", "secret"),
		secret(7, "ARG", "super_duper_secret_token"), secret(7, "ARG", "auth"),
		secret(8, "ENV", "apikey"), secret(9, "ENV", "git_key"),
	}}})
}

func TestLintExpose(t *testing.T) {
	casing := func(port string) lintFinding {
		return lintFinding{2, "ExposeProtoCasing", fmt.Sprintf("Defined protocol '%s' in EXPOSE instruction should be lowercase", port)}
	}
	format := func(port string) lintFinding {
		return lintFinding{2, "ExposeInvalidFormat", fmt.Sprintf("EXPOSE instruction should not define an IP address or host-port mapping, found '%s'", port)}
	}
	runLintCases(t, []lintCase{
		{name: "protocol casing", src: "FROM scratch\nEXPOSE 80/TcP 8080/TCP 8080/udp\n", want: []lintFinding{casing("80/TcP"), casing("8080/TCP")}},
		{name: "host mapping", src: "FROM scratch\nEXPOSE 127.0.0.1:80:80 [::1]:8080:8080 5000:5000 8000\n",
			// buildkit sorts the ports as it parses them
			want: []lintFinding{format("127.0.0.1:80:80"), format("5000:5000"), format("[::1]:8080:8080")}},
		{name: "both, expanded", src: "FROM scratch\nENV P=\"1:2/UDP 3\"\nEXPOSE $P\n",
			want: []lintFinding{{3, "ExposeProtoCasing", "Defined protocol '1:2/UDP' in EXPOSE instruction should be lowercase"},
				{3, "ExposeInvalidFormat", "EXPOSE instruction should not define an IP address or host-port mapping, found '1:2/UDP'"}}},
		{name: "stops at an invalid port", src: "FROM scratch\nEXPOSE 1/TCP 2/bogus 3/UDP\n", want: []lintFinding{casing("1/TCP")}},
		{name: "suggestion from the scope", src: "FROM busybox\nCOPY $B /\n",
			want: []lintFinding{undefinedVar(2, "Usage of undefined variable '$B' (did you mean $BB?)")}},
	})
}

func TestLintCopyIgnoredFile(t *testing.T) {
	ignored := func(line int, cmd, file string) lintFinding {
		return lintFinding{line, "CopyIgnoredFile", fmt.Sprintf("Attempting to %s file %q that is excluded by .dockerignore", cmd, file)}
	}
	ignore := func(p ...string) Options { return Options{IgnorePatterns: p} }
	runLintCases(t, []lintCase{
		{name: "copy and add", src: "FROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n", opts: ignore("Dockerfile"),
			want: []lintFinding{ignored(2, "Copy", "Dockerfile"), ignored(3, "Add", "Dockerfile")}},
		{name: "cleaned path and parent", src: "FROM scratch\nCOPY ./src/a/../b.go /\n", opts: ignore("src"),
			want: []lintFinding{ignored(2, "Copy", "src/b.go")}},
		{name: "from a stage", src: "FROM scratch AS base\nCOPY Dockerfile /foobar\n\nFROM base\nCOPY --from=base /foobar /Dockerfile\n", opts: ignore("foobar")},
		{name: "exclusions disable the rule", src: "FROM scratch\nCOPY ./Dockerfile .\nCOPY a .\n", opts: ignore("**", "!Dockerfile")},
		{name: "root with dotfiles", src: "FROM scratch\nCOPY . .\n", opts: ignore(".*")},
		{name: "root with everything", src: "FROM scratch\nCOPY . .\n", opts: ignore("*"), want: []lintFinding{ignored(2, "Copy", ".")}},
		{name: "URL", src: "FROM scratch\nADD https://example.com/x /x\n", opts: ignore("*")},
		{name: "no patterns", src: "FROM scratch\nCOPY Dockerfile .\n"},
		{name: "skipped", src: "# check=skip=CopyIgnoredFile\nFROM scratch\nCOPY Dockerfile .\n", opts: ignore("Dockerfile")},
	})
}

func TestLintBaseImagePlatform(t *testing.T) {
	runLintCases(t, []lintCase{
		{name: "other architecture", src: "FROM busybox\nFROM armonly\n",
			want: []lintFinding{{2, "InvalidBaseImagePlatform", `Base image armonly was pulled with platform "linux/arm64", expected "linux/amd64" for current build`}}},
		{name: "matching", src: "FROM busybox\n"},
		{name: "empty image", src: "FROM empty\n"},
		{name: "stage not built", src: "FROM armonly AS a\nFROM busybox\n"},
		{name: "stage not built, check", src: "FROM armonly AS a\nFROM busybox\n", opts: Options{AllStages: true},
			want: []lintFinding{{1, "InvalidBaseImagePlatform", `Base image armonly was pulled with platform "linux/arm64", expected "linux/amd64" for current build`}}},
	})
}
