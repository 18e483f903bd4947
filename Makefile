# One command each: `make run` starts the server (embedded SQLite, no services needed);
# `make test` runs every test. Both create what they need on first use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
GEN_DIR := clients/python
GEN_PKG := $(GEN_DIR)/tmcp/storage/v1
PROTO_DEPS := build/proto-deps
PROTOS := $(wildcard protos/tmcp/storage/v1/*.proto)
WEB_GEN := clients/web/src/gen
CHROMIUM := /usr/bin/chromium

.PHONY: help install run test test-unit lint proto proto-check proto-deps bench bench-quick clean

help:
	@echo "make run          start the server (SQLite under ./data unless STORAGE_DATABASE_URL),"
	@echo "                  with the gRPC-Web gateway on 127.0.0.1:8080"
	@echo "make test         run all tests (needs PostgreSQL and Redis on 127.0.0.1)"
	@echo "make lint         ruff, mypy --strict, import-linter, buf lint, proto-check, tsc"
	@echo "make proto        regenerate Python and TypeScript code from protos/"
	@echo "make bench        benchmark against the echo ceiling and the one-query floor,"
	@echo "                  then the sync figures (bench/sync.py) against their targets"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[server,dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --silent  # npm ci rejects this registry's lock (other platforms' optional packages)
	touch $@

install: $(VENV)/.installed node_modules/.installed

# The gRPC-Web gateway is on for make run, for pages served from itself or localhost:8080.
run: export STORAGE_WEB_LISTEN ?= 127.0.0.1:8080
run: export STORAGE_WEB_ORIGINS ?= http://localhost:8080,http://127.0.0.1:8080
run: $(VENV)/.installed
	$(PY) -m tmcp_storage_server serve

# The googleapis protos we import (status) or decode (error_details, for the TypeScript
# client), taken from the pinned googleapis-common-protos wheel.
proto-deps: $(VENV)/.installed
	@mkdir -p $(PROTO_DEPS)/google/rpc
	@for f in status error_details; do cp "$$($(PY) -c 'import google.rpc.status_pb2 as m, os; print(os.path.dirname(m.__file__))')/$$f.proto" $(PROTO_DEPS)/google/rpc/$$f.proto; done

# Generated code is written only here, from pinned grpcio-tools and mypy-protobuf.
define generate
	rm -rf $(1)/tmcp/storage/v1 && mkdir -p $(1)/tmcp/storage/v1
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos -I $(PROTO_DEPS) \
	  --python_out=$(1) --mypy_out=$(1) --grpc_python_out=$(1) --mypy_grpc_out=$(1) $(PROTOS)
	touch $(1)/tmcp/__init__.py $(1)/tmcp/storage/__init__.py $(1)/tmcp/storage/v1/__init__.py \
	  $(1)/tmcp/py.typed
endef

# TypeScript for the web client: buf generate with the pinned local protoc-gen-es (npm).
define generate_ts
	rm -rf $(1) && mkdir -p $(1)
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" $(BUF) generate --template clients/web/buf.gen.yaml -o $(1)
endef

proto: proto-deps node_modules/.installed
	$(call generate,$(GEN_DIR))
	$(call generate_ts,$(WEB_GEN))

proto-check: proto-deps node_modules/.installed
	@rm -rf build/proto-check && mkdir -p build/proto-check
	@$(call generate,build/proto-check) >/dev/null 2>&1
	@diff -r -x __pycache__ build/proto-check/tmcp/storage/v1 $(GEN_PKG) \
	  || { echo "generated code differs from protos/: run 'make proto' and commit"; exit 1; }
	@$(call generate_ts,build/proto-check-ts) >/dev/null 2>&1
	@diff -r build/proto-check-ts $(WEB_GEN) \
	  || { echo "generated TypeScript differs from protos/: run 'make proto' and commit"; exit 1; }
	@echo "proto-check: generated code matches protos/"

lint: install proto-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy server clients/python tests bench
	$(VENV)/bin/lint-imports
	$(BUF) lint
	npm run --silent typecheck

test: $(VENV)/.installed node_modules/.installed $(CHROMIUM)
	$(PY) -m pytest $(PYTEST_ARGS)

# Debian's Chromium for the browser tests of the web client (tests/web); playwright-core
# drives it, and never downloads a browser of its own.
$(CHROMIUM):
	apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; } \
	  || sudo sh -c 'apt-get update -q && apt-get install -y -q chromium'

test-unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# h2load (Debian nghttp2-client) is the load generator: ~50 us of CPU per call.
/usr/bin/h2load:
	command -v h2load || { apt-get install -y -q nghttp2-client || sudo apt-get install -y -q nghttp2-client; }

bench: $(VENV)/.installed /usr/bin/h2load
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/sync.py
	$(PY) bench/observe.py

bench-quick: $(VENV)/.installed /usr/bin/h2load
	$(PY) bench/run.py --quick
	$(PY) bench/sync.py --quick

clean:
	rm -rf build .mypy_cache .pytest_cache .ruff_cache
