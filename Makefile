# meshcdn: make help lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO      ?= go
# Fuzz targets run briefly by `make test` (package:FuzzName).
FUZZ_TARGETS := ./node/httpcache:FuzzParseCacheControl ./node/httpcache:FuzzParseRange ./node/site:FuzzCacheKey ./node/access:FuzzCheck
# An execution count, not a duration: a duration races Go's fuzz coordinator
# (golang/go#75804, fixed in Go 1.27) and fails spuriously on a loaded machine.
FUZZTIME ?= 100000x
BENCHTIME ?= 2s
# buf, grpcurl, protoc-gen-go-grpc, h2spec (HTTP/2 conformance) and Pebble (the ACME test server, with its
# DNS test server) are pinned by tools/go.mod (a module of
# their own, so they share one build of their common dependencies and none of
# them reaches the product's go.mod); protoc-gen-go is built from the
# product's own google.golang.org/protobuf, so generated code always matches
# the runtime it links against.
GRPCURL_VERSION := $(shell awk '$$1=="github.com/fullstorydev/grpcurl"{print $$2}' tools/go.mod)
BIN  := $(CURDIR)/bin
TOOL_PATH := PATH="$(BIN):$$PATH"

IMAGE   ?= meshcdn:dev
# docker-compose (1.27+) or the docker compose plugin, whichever answers.
COMPOSE ?= $(shell if docker compose version >/dev/null 2>&1; then echo docker compose; elif command -v docker-compose >/dev/null; then echo docker-compose; fi)
CLUSTER := $(COMPOSE) -f deploy/docker-compose.yml -p meshcdn

.PHONY: help build run test browser unit fuzz lint bench bench-compare clean tools proto proto-check image cluster-up cluster-down e2e

help: ## List targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/$$(IMAGE)/$(IMAGE)/' | awk -F':.*## ' '{printf "  %-13s %s\n",$$1,$$2}'

build: ## Static binary bin/meshcdn
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w -X main.version=$(VERSION)' -o bin/meshcdn ./cmd/meshcdn

image: ## Container image $(IMAGE): FROM scratch around the static binary
	@command -v docker >/dev/null || { echo "make image needs docker"; exit 1; }
	@test -f /etc/ssl/certs/ca-certificates.crt || { echo "make image needs /etc/ssl/certs/ca-certificates.crt (Debian: ca-certificates)"; exit 1; }
	rm -rf $(BIN)/image && mkdir -p $(BIN)/image/cache $(BIN)/image/mesh
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w -X main.version=$(VERSION)' -o $(BIN)/image/meshcdn ./cmd/meshcdn
	cp /etc/ssl/certs/ca-certificates.crt $(BIN)/image/
	docker build -q -f deploy/Dockerfile -t $(IMAGE) $(BIN)/image

cluster-up: image ## docker-compose cluster: demo origin, regions a (the shield) and b of 2 edges each, the router (DNS 127.0.0.1:5353, HTTP :8090)
	@test -n "$(COMPOSE)" || { echo "make cluster-up needs docker compose or docker-compose"; exit 1; }
	MESHCDN_IMAGE=$(IMAGE) $(CLUSTER) up -d
	$(CLUSTER) ps

cluster-down: ## Stop the docker-compose cluster and remove its volumes (the mesh CA and gossip key too)
	@test -n "$(COMPOSE)" || { echo "make cluster-down needs docker compose or docker-compose"; exit 1; }
	$(CLUSTER) down -v --remove-orphans

e2e: image tools ## End-to-end suite on a real docker-compose cluster (needs a Docker engine)
	@test -n "$(COMPOSE)" || { echo "make e2e needs docker compose or docker-compose"; exit 1; }
	@# The suite tears its project down itself; this also covers a run cut short by -timeout.
	rc=0; MESHCDN_IMAGE=$(IMAGE) MESHCDN_COMPOSE="$(COMPOSE)" $(GO) test -tags e2e -count=1 -v -timeout 15m ./deploy/e2e || rc=$$?; \
	$(COMPOSE) -f deploy/docker-compose.yml -p meshcdn-e2e down -v --remove-orphans -t 5 >/dev/null 2>&1 || true; exit $$rc

run: build ## Local cluster: demo origin on :8000, three meshed edges on :8080-:8082 (Ctrl-C stops)
	./bin/meshcdn dev

test: lint tools browser unit fuzz ## Lint, every test under the race detector (README grpcurl lines included, the status page in headless Chromium), brief fuzzing

# The status page's test drives headless Chromium: Debian's package when it
# is missing (as root, or through sudo).
browser: ## Install Chromium from Debian's packages when missing (the status page's browser test)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || { \
		echo "installing chromium from Debian's packages"; \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium || \
		{ $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }; }


unit: ## go test -race ./..., then the memory-bound and 0-RTT client tests without the race detector
	$(GO) test -race -count=1 -timeout 9m30s ./...
	$(GO) test -count=1 -run '^(TestLargeObjectFromDisk|TestLargeObjectThroughPeer|TestHTTP3ZeroRTT)$$' ./node
	$(GO) test -count=1 -run '^TestEarlyGETWaitsForHandshake$$' ./node/h3
	$(GO) test -count=1 -run '^TestMemoryBudget$$' ./cmd/meshcdn
	cd bench && $(GO) test -count=1 ./...

fuzz: ## Run each fuzz target for FUZZTIME executions (default 100000x)
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

lint: proto-check ## go vet, gofmt, buf lint and format, generated code up to date, the README's tables, flags and make targets
	$(GO) vet ./...
	$(GO) vet -tags e2e ./deploy/e2e
	cd bench && $(GO) vet ./...
	$(GO) test -count=1 -run '^(TestREADMEShape|TestFlagsDocumented)$$' ./cmd/meshcdn
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null | grep -v '\.pb\.go$$' || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

tools: $(BIN)/buf $(BIN)/grpcurl $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-go $(BIN)/pebble $(BIN)/h2spec ## Install buf, grpcurl, the protoc plugins, Pebble and h2spec (pinned) into bin/

# Built without optimisation: they read a few small files, and it cuts a
# fresh machine's build by a quarter.
$(BIN)/buf $(BIN)/grpcurl $(BIN)/protoc-gen-go-grpc $(BIN)/pebble $(BIN)/pebble-challtestsrv $(BIN)/h2spec &: tools/go.mod tools/go.sum
	cd tools && CGO_ENABLED=0 GOBIN=$(BIN) $(GO) install -trimpath -gcflags='all=-N -l' \
		-ldflags='-s -w -X main.version=$(GRPCURL_VERSION)' tool
	touch $(BIN)/buf $(BIN)/grpcurl $(BIN)/protoc-gen-go-grpc $(BIN)/pebble $(BIN)/pebble-challtestsrv $(BIN)/h2spec
$(BIN)/protoc-gen-go: go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ google.golang.org/protobuf/cmd/protoc-gen-go

proto: tools ## Regenerate the Go code under proto/ (committed)
	$(TOOL_PATH) $(BIN)/buf generate

proto-check: tools ## Fail if buf lint or format complains, or the committed generated code is stale
	$(TOOL_PATH) $(BIN)/buf lint
	$(TOOL_PATH) $(BIN)/buf format --diff --exit-code
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(TOOL_PATH) $(BIN)/buf generate -o "$$tmp"; \
	test -d "$$tmp/proto" || { echo "buf generate wrote nothing"; exit 1; }; \
	for f in $$(cd "$$tmp/proto" && find . -name '*.go'); do \
		cmp -s "$$tmp/proto/$$f" "proto/$$f" || { echo "proto/$$f is stale: run make proto"; exit 1; }; \
	done

bench: ## Benchmarks with allocations: hits (in process, over loopback, signed, compressed), peer fetches, a 3-node purge, a drain hand-off (BENCHTIME=2s)
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) ./node/...

# The comparison's own tools, from Debian's packages when missing (as root,
# or through sudo).
COMPARE_PACKAGES := nginx:nginx-light varnishd:varnish wrk:wrk h2load:nghttp2-client

bench-compare: build ## meshcdn beside nginx proxy_cache, Varnish and bare net/http and fasthttp servers on loopback, HTTP/1.1, HTTPS, HTTP/2 and HTTP/3 (about 16 minutes): table and plots in bench/results/
	@missing=""; for p in $(COMPARE_PACKAGES); do command -v $${p%%:*} >/dev/null || PATH="$$PATH:/usr/sbin" command -v $${p%%:*} >/dev/null || missing="$$missing $${p##*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing from Debian's packages"; \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing || \
		{ $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; }; \
	fi
	cd bench && PATH="$$PATH:/usr/sbin" $(GO) run ./compare --meshcdn $(BIN)/meshcdn --out results

clean: ## Remove build output
	rm -rf bin
