# The bootstrap's tasks. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

CARGO ?= cargo
PYTHON ?= python3
# apt-get needs root; on a laptop run `make SUDO=sudo test`.
SUDO ?=
# podman or docker; `make image PODMAN=docker` gives the same image.
PODMAN ?= podman
IMAGE ?= bootstrap:latest
DIST ?= dist

# The static build: musl, with mimalloc as the allocator (see the README's "Static binary").
# musl-gcc compiles the C in ring (TLS of the client binary) and mimalloc for the musl target;
# mimalloc's build flags are in .cargo/config.toml, for every build.
MUSL_TARGET := x86_64-unknown-linux-musl
STATIC_DIR := target/$(MUSL_TARGET)/release
STATIC_ENV := CC_x86_64_unknown_linux_musl=musl-gcc
# The zip's timestamp: the commit's, so two packages of one commit are byte-identical.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 315532800)

APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

.PHONY: help run build build-deps package image deploy test test-deps test-packaging \
	test-packaging-deps test-attacks bench-attacks soak lint bench fuzz clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

run: ## Serve the sample services locally on :8089 (cargo run)
	$(CARGO) run --bin bootstrap

build-deps: ## Install the musl target and musl-gcc the static build needs
	@rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET)
	@command -v musl-gcc >/dev/null || { \
	  $(SUDO) apt-get update -qq && $(APT_INSTALL) musl-tools; }

build: build-deps ## Build the static x86_64 Linux bootstrap and client (target/x86_64-unknown-linux-musl/release)
	$(STATIC_ENV) $(CARGO) build --release --locked --target $(MUSL_TARGET) --bin bootstrap --bin client

package: build ## Write dist/bootstrap.zip for Function Compute (reproducible)
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(PYTHON) scripts/package_zip.py \
	  $(STATIC_DIR)/bootstrap $(DIST)/bootstrap.zip

image: build ## Build the container image bootstrap:latest from the Containerfile
	# docker format: the OCI format has no HEALTHCHECK and podman would drop it.
	$(PODMAN) build --format docker -f Containerfile -t $(IMAGE) .

deploy: package ## Deploy to Function Compute with Serverless Devs (s.yaml; needs `s config add`)
	s deploy -y

test-deps: ## Install what the tests need besides Rust: grpcio, grpcurl, h2load
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
	@command -v h2load >/dev/null || { \
	  $(SUDO) apt-get update -qq && $(APT_INSTALL) nghttp2-client; }

test-packaging-deps: test-deps ## Install what the packaging tests need: podman, nginx, pytest, jsonschema
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/packaging/requirements.txt
	@for tool in podman runc nginx file unzip openssl; do command -v $$tool >/dev/null || exit 1; done \
	  || { $(SUDO) apt-get update -qq && $(APT_INSTALL) podman runc nginx-light file unzip openssl; }

test: test-deps build ## Run the whole test suite (what CI runs): cargo test, then the packaging tests
	$(CARGO) test --locked
	$(MAKE) --no-print-directory test-packaging
	$(MAKE) --no-print-directory test-attacks

test-packaging: build test-packaging-deps ## The static binary, zip, image, s.yaml and a TLS gateway (pytest)
	$(PYTHON) -m pytest -q tests/packaging

test-attacks: ## Hostile input against the binary: floods, resets, slowloris, malformed gRPC (pytest)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/attacks/requirements.txt
	$(PYTHON) -m pytest -q tests/attacks

bench-attacks: ## The attack suite at 100x its iterations and durations (ATTACK_SCALE=long)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/attacks/requirements.txt
	ATTACK_SCALE=long $(PYTHON) -m pytest -q tests/attacks

soak: ## 10 minutes of mixed load and attacks, then a drain; writes bench/SOAK.md (SOAK_SECONDS=600)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/attacks/requirements.txt
	$(PYTHON) bench/soak.py --duration $(or $(SOAK_SECONDS),600)

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

bench: ## Benchmark against a bare tonic server and grpc-go; writes bench/RESULTS.md (ARGS="--rounds 5")
	SUDO=$(SUDO) CARGO=$(CARGO) bench/run.sh $(ARGS)

fuzz: ## Run each cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) and fail on a crash
	bench/fuzz.sh

clean: ## Remove build outputs
	$(CARGO) clean
	rm -rf $(DIST)
