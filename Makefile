# One-command entry points. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint types unit bench sdk-dist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: start the service on its embedded defaults (SQLite under ./var, one ES256 keyset)
run: $(STAMP)
	$(BIN)/jwks-service serve

## test: lint, types and the whole test suite
test: lint types
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

## bench: the whole suite (in process, over HTTP against OpenBao, how cost grows); writes bench/results/<date>-<host>.*
bench: $(STAMP)
	$(BIN)/python -m bench

## sdk-dist: the SDK alone, as the wheel dist/jwks_service_sdk-<version>-py3-none-any.whl (sdk-dist/README.md)
sdk-dist: $(STAMP)
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist ./sdk-dist

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info dist
