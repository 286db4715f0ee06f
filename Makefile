# The commands people type. Each sets up the virtual environment it needs first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint clean install

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Start the whole service on embedded PostgreSQL, Redis and Kafka (dashboard: http://127.0.0.1:8080)
run: $(STAMP)
	$(PY) -m local.run

## Run the test suite against real servers (embedded unless the environment names others)
test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) .local .pytest_cache test-artifacts
