# The bootstrap's tasks. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

CARGO ?= cargo
PYTHON ?= python3

.PHONY: help run build test test-deps lint clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: ## Serve the sample services locally on :8089 (cargo run)
	$(CARGO) run --bin bootstrap

build: ## Build the release binaries
	$(CARGO) build --release --locked

test-deps: ## Install what the tests need besides Rust (Python's grpcio clients)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt

test: test-deps ## Run the whole test suite (what CI runs)
	$(CARGO) test --locked

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

clean: ## Remove build outputs
	$(CARGO) clean
	rm -rf dist
