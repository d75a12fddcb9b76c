# Every target creates and uses the virtualenv in .venv; nothing is installed globally.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Benchmarks run in their own virtualenv: operatord's runtime dependencies and kopf only, as a
# deployment has them (the test tools pull in packages that libraries import when present).
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: venv tools image test lint format demo bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

$(BENCH_STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

# prometheus and promtool (Debian package) for the alert-rule and live-scrape tests; podman,
# runc and mmdebstrap when no container engine works, for the image test.
tools:
	@./.ci/install-prometheus
	@./.ci/install-container-engine

# The image, with docker, podman or buildah (ENGINE=...), tagged $(IMAGE). PYTHON_IMAGE=...
# picks the base; where python:3.11-slim-bookworm cannot be pulled, one is built from Debian
# packages. .ci/build-image says which base and engine it used.
IMAGE ?= operatord:dev
image:
	IMAGE=$(IMAGE) ./.ci/build-image

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
	$(BENCH_VENV)/bin/python bench/workqueue.py
	$(BENCH_VENV)/bin/python bench/apiserver.py
	$(BENCH_VENV)/bin/python bench/converge.py
	$(BENCH_VENV)/bin/python bench/vs_kopf.py
	$(BENCH_VENV)/bin/python bench/scaling.py
	$(BENCH_VENV)/bin/python bench/initial_list.py
	$(BENCH_VENV)/bin/python bench/latency.py
	$(BENCH_VENV)/bin/python bench/related.py
	$(BENCH_VENV)/bin/python bench/crashers.py
	$(BENCH_VENV)/bin/python bench/diff.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) build *.egg-info .pytest_cache
