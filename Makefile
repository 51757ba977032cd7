# Two set-up commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast lint bench dist docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

$(VENV)/.installed-docs: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/bayesmf demo --out runs/quickstart

test: $(VENV)/.installed-dev
	$(PY) -m pytest

# the edit loop: every test not marked slow (CI runs `make test`, the whole suite)
test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest -m "not slow"

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check bayesmf tests benchmarks

bench: $(VENV)/.installed
	$(PY) -m benchmarks

# sdist and wheel into dist/, built in an isolated environment, then checked as PyPI would; a
# stale build/ could put since-deleted modules into the wheel, so it goes first
dist: $(VENV)/.installed-dev
	rm -rf dist build *.egg-info
	$(PY) -m build --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

# The documentation site into docs/_build/html (not committed), offline, warnings as errors; every
# notebook in notebooks/ is executed with BAYESMF_FAST=1 (BAYESMF_NB_TIMEOUT: seconds per cell).
# Every page is rebuilt each time (-E, generated API pages removed first): a notebook or docstring
# that no longer works fails the build even when its own file did not change.
docs: $(VENV)/.installed-docs
	rm -rf docs/api/generated
	BAYESMF_FAST=1 $(PY) -m sphinx -b html -E -W --keep-going -q docs docs/_build/html
	@echo "documentation: docs/_build/html/index.html"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache docs/_build docs/api/generated
