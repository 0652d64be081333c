# The bootstrap's tasks. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

CARGO ?= cargo
PYTHON ?= python3
# apt-get needs root; on a laptop run `make SUDO=sudo test`.
SUDO ?=

.PHONY: help run build test test-deps lint clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: ## Serve the sample services locally on :8089 (cargo run)
	$(CARGO) run --bin bootstrap

build: ## Build the release binaries
	$(CARGO) build --release --locked

test-deps: ## Install what the tests need besides Rust: grpcio, grpcurl, h2load
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
	@command -v h2load >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client; }

test: test-deps ## Run the whole test suite (what CI runs)
	$(CARGO) test --locked

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

clean: ## Remove build outputs
	$(CARGO) clean
	rm -rf dist
