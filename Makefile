# The commands people type. Each sets up the virtual environment it needs first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint clean install bench soak wrk demo-data compose-config chromium vendor-js dashboard-screenshots

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
test: $(STAMP) chromium
	$(PY) -m pytest

## Send sample readings to a running service (`make run`, or URL=http://localhost for docker compose):
##   make demo-data DEVICES=20 METRICS=6 ITERATIONS=120 URL=http://127.0.0.1:8080 TOKEN=<access token>
## Plain `=`: a TOKEN or URL in your shell's environment is not picked up by accident.
DEVICES    = 10
METRICS    = 6
ITERATIONS = 60
URL        = http://127.0.0.1:8080
TOKEN      =
# The generator needs only the standard library: no virtual environment required.
DEMO_PY    = $(if $(wildcard $(PY)),$(PY),$(PYTHON))

# The token travels in the environment (IOT_TOKEN), so it is neither echoed here nor visible in ps.
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

## Regenerate docs/dashboard-overview.png and docs/dashboard-device.png with a day of demo data
dashboard-screenshots: $(STAMP) chromium
	$(PY) scripts/dashboard_screenshots.py

## Benchmarks, printed as JSON lines and appended to BENCHMARKS.md (QUICK=1: under two minutes)
bench: $(STAMP) wrk
	$(PY) -m local.bench --record $(if $(QUICK),--quick)

## wrk (Debian's C load generator) for the single-reading benchmark; without it the bench uses a Python client
wrk:
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } || \
	  echo "wrk is not installed: the single-reading benchmark uses the Python client instead"

## A sustained mixed load (SOAK_SECONDS, default 60): zero errors and nothing lost?
soak: $(STAMP)
	$(PY) -m local.bench --record --soak $(or $(SOAK_SECONDS),60)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) .local .pytest_cache test-artifacts

## Build dist/<function>.zip and dist/deps.zip for FunctionGraph (Python3.10, Linux x86-64), reproducibly
.PHONY: package deploy deploy-dry-run checkov
package: $(STAMP)
	$(PY) -m deploy package --dist dist

## Push dist/ to FunctionGraph with the SDK (HUAWEICLOUD_* credentials; ARGS="--alias live" etc.)
deploy: package
	$(PY) -m deploy deploy --dist dist $(ARGS)

deploy-dry-run: package
	$(PY) -m deploy deploy --dist dist --dry-run $(ARGS)

## checkov with our Huawei Cloud checks (its own virtualenv under build/, created on first use)
checkov: $(STAMP)
	$(PY) scripts/checkov.py
