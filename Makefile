# builder — see README.md.
GO      ?= go
BIN     := bin/builder
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
DEMO    := .demo
ROOT    := $(DEMO)/root
# Fuzzing: each of the six targets runs for a count of executions sized to
# about 30s (.ci/fuzz.sh), or for FUZZTIME (10m, 500000x) when it is set;
# new inputs minimized for at most FUZZMINIMIZETIME (a count: go's default
# 60s ate the whole budget).
FUZZTIME ?=
FUZZMINIMIZETIME ?= 100x

.PHONY: all build sbom test test-short vet bench fuzz demo demo-deps image clean

all: build

build:
	$(GO) build -ldflags '-X main.version=$(VERSION)' -o $(BIN) ./cmd/builder

# The SBOM scanner builder build --sbom runs (found beside bin/builder):
# syft in a module of its own (sbom/), about five times builder's size.
sbom:
	cd sbom && $(GO) build -o ../bin/builder-sbom .

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' ':!fixtures/conformance/cases'))" || { gofmt -l $$(git ls-files '*.go' ':!fixtures/conformance/cases'); exit 1; }
	$(GO) vet ./...
	cd sbom && $(GO) vet ./...

# Unit, integration and Docker-compatibility tests. Tests that need root,
# overlayfs, Docker or a registry skip on a developer machine without them
# and FAIL when CI=true.
test: vet
	$(GO) test -count=1 -timeout 40m ./...
	cd sbom && $(GO) test -count=1 ./...

# The fast loop: no root, Docker or registry (internal/testenv skips every
# test that needs one under -short).
test-short:
	$(GO) test -short -count=1 ./...

# Every benchmark; BENCH=REGEXP selects (BENCH=Cold: the cold-path
# benchmarks, each printing builder's time, the reference's measured in
# the same run and their ratio), BENCHTIME=Nx the iterations.
bench:
	$(GO) test -run '^$$' -bench '$(or $(BENCH),.)' -benchmem -benchtime $(or $(BENCHTIME),3x) -timeout 60m ./...

# Every fuzz target in turn (parser, planner, .dockerignore, extractor,
# decompression, builder load), with a one-line summary per target:
# execs, rate and new interesting inputs. FUZZ=REGEXP selects targets.
fuzz:
	GO='$(GO)' FUZZTIME='$(FUZZTIME)' FUZZMINIMIZETIME='$(FUZZMINIMIZETIME)' .ci/fuzz.sh '$(or $(FUZZ),.)'

# busybox-static provides the base image's only binary; slirp4netns the
# private network of RUN steps (builder's default network).
demo-deps:
	@if [ ! -x /bin/busybox ] || ! /bin/busybox --list >/dev/null 2>&1 || ! command -v slirp4netns >/dev/null; then \
		echo "installing busybox-static and slirp4netns"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static slirp4netns; \
	fi

# Build the binary, make the busybox base image with builder itself, build
# the example, rebuild it from cache, and show its history.
demo: build demo-deps
	rm -rf $(DEMO)/base
	mkdir -p $(DEMO)/base
	$(GO) run ./fixtures/cmd/mkbase $(DEMO)/base/rootfs
	printf 'FROM scratch\nCOPY rootfs/ /\nCMD ["sh"]\n' > $(DEMO)/base/Dockerfile
	$(BIN) --root $(ROOT) build --progress plain -t busybox:demo $(DEMO)/base
	$(BIN) --root $(ROOT) build --progress plain -t app:v1 -o type=docker,dest=$(DEMO)/app.tar fixtures/demo
	@echo; echo "== rebuild: every step comes from the cache =="
	$(BIN) --root $(ROOT) build --progress plain -t app:v1 fixtures/demo
	@echo; echo "== builder history app:v1 =="
	$(BIN) --root $(ROOT) history app:v1
	@echo; echo "== builder images =="
	$(BIN) --root $(ROOT) images
	@echo; echo "docker-loadable archive: $(DEMO)/app.tar"

# The builder image for CI containers (image/Dockerfile), built by builder:
# a static binary with chroot isolation's file capabilities on busybox.
# IMAGE names it; BASE=busybox:fixture builds it offline (make demo's base).
IMAGE ?= builder:$(VERSION)
BASE  ?= busybox:latest
image: build
	rm -rf bin/image && mkdir -p bin/image
	CGO_ENABLED=0 $(GO) build -ldflags '-s -w -X main.version=$(VERSION)' -o bin/image.builder ./cmd/builder
	$(GO) run ./image/mkcontext bin/image.builder bin/image
	$(BIN) build --build-arg BASE=$(BASE) -f image/Dockerfile -t $(IMAGE) bin/image

clean:
	rm -rf bin $(DEMO)
