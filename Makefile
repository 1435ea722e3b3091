# `make run` runs the quickstart sweep; `make test` the test suite without the end-to-end runs (marked
# `slow`), `make test-slow` those. Each creates .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-slow test-all lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tfbench run sweeps/quickstart.yaml

# the fast suite: everything but the end-to-end runs marked `slow` (Ray sweeps, kills, installs)
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# the end-to-end runs alone; CI runs both
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check methods harness tests

clean:
	rm -rf $(VENV) *.egg-info
