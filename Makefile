# Runstream: the two commands a fresh clone needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install browser demo test test-frameworks unit lint typecheck proto bench kafka-start kafka-stop clean

## make install: the venv with everything (SDK, server extras, dev tools)
install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

## make browser: Debian's Chromium at /usr/bin/chromium for tests/browser (apt-get if missing)
browser:
	deploy/browser.sh

## make demo: the main job on the embedded default (no Kafka, no server to install)
demo: install
	$(PY) deploy/demo/run_demo.py

## make test: lint + types + the whole suite against a real Kafka broker and chdb, on two
## pytest-xdist workers (a file stays on one worker; each worker starts its own broker and
## opens its own chdb path)
test: install browser
	deploy/kafka.sh fetch >/dev/null
	$(MAKE) --no-print-directory lint typecheck
	$(PY) -m pytest -n 2 --dist loadfile tests

## make test-frameworks: the Lightning and Hugging Face integrations in real DDP jobs on two
## CPU ranks (tests/frameworks); installs the `frameworks` extra first (PyTorch, Lightning,
## accelerate: a download of about 5 GB, as PyPI has no CPU-only torch for Linux)
test-frameworks: install
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,frameworks]'
	$(PY) -m pytest tests/frameworks

unit: install
	$(PY) -m pytest tests/unit

lint: install
	$(PY) -m ruff check .

# Checks every source file in place (pyproject's [tool.mypy] names the folders), so errors
# carry the files' real paths.
typecheck: install
	$(PY) -m mypy

## make proto: regenerate the committed protobuf/gRPC code
proto: install
	PYTHON=$(PY) proto/generate.sh

## make bench: benchmark tables (medians, each against a baseline measured in the same run);
## installs the bench extra (MLflow, for side-by-side numbers). BENCH="producer query" for a subset.
bench: install
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	deploy/kafka.sh fetch >/dev/null
	$(PY) deploy/bench/run_bench.py $(BENCH)

kafka-start:
	deploy/kafka.sh start

kafka-stop:
	deploy/kafka.sh stop

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache *.egg-info
