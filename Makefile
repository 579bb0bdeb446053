# metrocli — two commands: `make demo` (the main job) and `make test` (all tests).
# Both bootstrap everything on a fresh machine: Debian packages, .venv, and `pip install -e ".[dev]"`.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: demo test check lint types imports format sysdeps venv bench clean

## demo: run the main job end to end on sample_photos/ (outputs in demo/)
demo: sysdeps $(STAMP)
	$(PY) -m metrocli.demo --out demo

## test: lint, types, import contracts and the whole pytest suite, slow tests included (the README's command);
## the 25 slowest tests are listed at the end (the suite must stay under 20 minutes on 2 cores)
test: sysdeps $(STAMP) lint types imports
	$(VENV)/bin/python -m pytest --durations=25 $(PYTEST_ARGS)

## check: the fast inner loop (under 2 minutes): lint, types, import contracts and the tests not marked slow
check: sysdeps $(STAMP) lint types imports
	$(VENV)/bin/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

## lint: ruff lint and format check
lint: $(STAMP)
	$(VENV)/bin/ruff check metrocli tests benchmarks
	$(VENV)/bin/ruff format --check metrocli tests benchmarks

## types: mypy over the package (settings in pyproject.toml)
types: $(STAMP)
	$(VENV)/bin/mypy

## imports: the layer, no-torch and no-cycle contracts (import-linter, settings in pyproject.toml)
imports: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

format: $(STAMP)
	$(VENV)/bin/ruff format metrocli tests benchmarks
	$(VENV)/bin/ruff check --fix metrocli tests benchmarks

## sysdeps: Debian packages open3d needs (libusb-1.0-0); a no-op when already there
sysdeps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then \
		echo "installing Debian package libusb-1.0-0 (needed by open3d)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libusb-1.0-0; \
	fi

venv: $(STAMP)

# Re-installs only when pyproject.toml changed or the venv is missing.
$(STAMP): pyproject.toml
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	@touch $(STAMP)

bench: sysdeps $(STAMP)
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_pipeline.py

clean:
	rm -rf demo .pytest_cache .ruff_cache build *.egg-info
