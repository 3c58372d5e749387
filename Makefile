# meshcdn: make help lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO      ?= go
# Fuzz targets run briefly by `make test` (package:FuzzName).
FUZZ_TARGETS := ./node/httpcache:FuzzParseCacheControl ./node/httpcache:FuzzParseRange ./node/site:FuzzCacheKey
# An execution count, not a duration: a duration races Go's fuzz coordinator
# (golang/go#75804, fixed in Go 1.27) and fails spuriously on a loaded machine.
FUZZTIME ?= 100000x
BENCHTIME ?= 2s

.PHONY: help build run test unit fuzz lint bench clean

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n",$$1,$$2}'

build: ## Static binary bin/meshcdn
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w -X main.version=$(VERSION)' -o bin/meshcdn ./cmd/meshcdn

run: build ## Local cluster: demo origin on :8000, edge on :8080 (Ctrl-C stops)
	./bin/meshcdn dev

test: lint unit fuzz ## Lint, every test under the race detector, brief fuzzing

unit: ## go test -race ./..., then the memory-bound test without the race detector
	$(GO) test -race -count=1 -timeout 8m ./...
	$(GO) test -count=1 -run '^TestLargeObjectFromDisk$$' ./node

fuzz: ## Run each fuzz target for FUZZTIME executions (default 100000x)
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

lint: ## go vet and a gofmt check
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

bench: ## Hit-path benchmarks with allocations
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) ./node/...

clean: ## Remove build output
	rm -rf bin
