# The two set-up commands are `make demo` and `make test`; everything else is optional.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Optional overrides (see .env.example); `dagster dev` reads .env by itself too.
ifneq (,$(wildcard .env))
include .env
export
endif
# `make dev PROFILE=production`: the Dagster instance on PostgreSQL (DAGSTER_PG_URL) and every
# step on Celery workers taking them off RabbitMQ (MLOPS_CELERY_BROKER).
ifeq ($(PROFILE),production)
export MLOPS_DAGSTER_PROFILE := production
export MLOPS_EXECUTOR ?= celery
endif
export MLOPS_DATA_HOME ?= $(CURDIR)/.data
export DAGSTER_HOME ?= $(abspath $(MLOPS_DATA_HOME))/dagster

.PHONY: install browser demo demo-real dev workers labelstudio object-store mlflow mlflow-server serve restore test screenshots lint format benchmark clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

browser:  ## Debian's Chromium for the UI tests (Playwright cannot download browsers here)
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

demo: install  ## materialize the whole asset graph on the embedded defaults
	$(BIN)/python -m orchestration.demo

demo-real: install  ## the same graph on ../shared/data (banking77, orange juice), read in place; QUICK=1: short transformer run
	$(BIN)/python -m orchestration.demo --real $(if $(QUICK),--quick)

dev: install  ## Dagster UI + daemon on http://127.0.0.1:3000 (sensors run) and Label Studio on :8080
	$(BIN)/python -m orchestration.dev

workers: install  ## Celery step workers on this machine (MLOPS_CELERY_WORKERS, default 2) for MLOPS_EXECUTOR=celery
	$(BIN)/python -m orchestration.celery_workers --workers $${MLOPS_CELERY_WORKERS:-2}

labelstudio: install  ## the Label Studio server (its own venv, data under the data home) on :8080
	$(BIN)/python -m orchestration.labelstudio

object-store: install  ## an S3-compatible store on :9000 (rclone serve s3; objects under the data home)
	$(BIN)/python -m orchestration.object_store

mlflow: install  ## the MLflow UI (runs, registry, aliases) on http://127.0.0.1:5000
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri \
		"$${MLFLOW_TRACKING_URI:-sqlite:///$(abspath $(MLOPS_DATA_HOME))/mlflow/mlflow.db}"

mlflow-server: install  ## the production registry: mlflow server --app-name basic-auth (MLFLOW_BACKEND_STORE_URI)
	$(BIN)/python -m orchestration.mlflow_server

serve: install  ## bentoml serve of the champion Bento on http://127.0.0.1:3001, following new ones
	$(BIN)/python -m orchestration.serving

SNAPSHOT ?= latest
restore: install  ## lineage tables back from a snapshot: make restore SNAPSHOT=<folder|latest> [FORCE=1]
	$(BIN)/python -m orchestration.restore "$(SNAPSHOT)" $(if $(FORCE),--force)

test: install browser  ## lint, then the whole suite (the browser tests of the four UIs last)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m orchestration.instance
	$(BIN)/dagster definitions validate -w workspace.yaml
	$(BIN)/pytest

screenshots: install browser  ## the UI tests, saving the README's pictures in tests/ui/screenshots/
	MLOPS_SCREENSHOTS_DIR=tests/ui/screenshots $(BIN)/pytest tests/ui

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

benchmark: install  ## validation, training-loop and serving throughput, forecast backtest scaling
	$(BIN)/python benchmarks/validation_throughput.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/forecast_scaling.py
	$(BIN)/python benchmarks/serve_load.py
	$(BIN)/python benchmarks/serve_open_loop.py

clean:
	rm -rf $(VENV) .venv-labelstudio .data dbt_project/target dbt_project/logs
