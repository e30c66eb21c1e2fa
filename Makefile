PY ?= python3
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint bench bench-smoke clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

run: $(STAMP)
	$(BIN)/statefulmcp serve examples/ --http 127.0.0.1:$(PORT)

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy src tests benchmarks

# Four workers on two cores: most tests wait on server processes they start (with two workers the
# CPUs were a third busy). Keep xdist's default `load` scheduling: each worker gets items in
# collection order, and tests/test_store.py (no statefulmcp thread alive) relies on running before
# the in-process wasm tests, whose epoch thread outlives them by a second; `--dist worksteal`
# reorders and fails it. `make test PYTEST_WORKERS=auto` for one worker a core.
PYTEST_WORKERS ?= 4
test: lint
	$(BIN)/pytest -q -n $(PYTEST_WORKERS)

# `make bench QUICK=1` end to end, checking only that every group ran (CI runs it after `make test`).
bench-smoke: $(TEST_STAMP)
	$(BIN)/pytest -q -m bench

bench: $(TEST_STAMP)
	$(BIN)/python -m benchmarks $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV)
