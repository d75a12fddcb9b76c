# Every target creates and uses the virtualenv in .venv; nothing is installed globally.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: venv tools test lint format demo bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# prometheus and promtool (Debian package) for the alert-rule and live-scrape tests.
tools:
	@./.ci/install-prometheus

lint: $(STAMP)
	$(BIN)/ruff check operatord tests bench examples
	$(BIN)/ruff format --check operatord tests bench examples
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format operatord tests bench examples
	$(BIN)/ruff check --fix operatord tests bench examples

test: lint tools
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/operatord demo

bench: $(BENCH_STAMP)
	$(BIN)/python bench/workqueue.py
	$(BIN)/python bench/apiserver.py
	$(BIN)/python bench/converge.py
	$(BIN)/python bench/vs_kopf.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/related.py
	$(BIN)/python bench/crashers.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
