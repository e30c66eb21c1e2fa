PY ?= python3
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint bench bench-smoke conformance clean

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

# Three workers on two cores: a test spends much of its time waiting (on a lease, a drain, a
# child process), so a third keeps both cores busy; worksteal evens out the long tests at the end.
test: lint
	$(BIN)/pytest -q -n 3 --dist worksteal

# `make bench QUICK=1` end to end, checking only that every group ran (CI runs it after `make test`).
bench-smoke: $(TEST_STAMP)
	$(BIN)/pytest -q -m bench

bench: $(TEST_STAMP)
	$(BIN)/python -m benchmarks $(if $(QUICK),--quick,)

# The official MCP conformance suite (pinned, with the Node 22 it needs, in .venv/conformance)
# against tests/conformance/everything.py; prints each scenario and the pass count.
conformance: $(TEST_STAMP)
	$(BIN)/python tests/conformance/harness.py

clean:
	rm -rf $(VENV)
