# Two entry points: `make run` (set up, run the main job) and `make test` (set up, run tests).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-quick test-integration test-slow lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The entry points keep freed memory for reuse themselves (solvers.retain_freed_memory):
# XLA:CPU's per-call scratch memory otherwise page-faults in again on every training step.
run: $(STAMP)
	$(BIN)/hs-pipeline

# `make test` (what CI runs): the default suite, then the integration group (subprocess
# launches: examples, tiny pipelines, several processes or devices, kill and resume, and
# in-process checks over 5 s, so that the default suite stays within 8 minutes on 2 cores).
test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -m integration

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q -m integration

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[bench]"
	$(BIN)/python benchmarks/solvers.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
