# The two front-door commands: `make run` and `make test`. Both create the virtual environment
# on first use and keep it in step with requirements*.txt.
#
# The environment lives outside the project folder by default, because `mlflow run -b databricks`
# uploads the whole folder. Point VENV elsewhere to keep several, e.g. `make test VENV=.venv`.

PYTHON ?= python3.11
VENV ?= $(HOME)/.cache/neuroflow/venv
# Where `make run` keeps its MLflow store (mlflow.db and mlruns/): outside the project too.
STORE ?= $(HOME)/.cache/neuroflow/store
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false
PYTEST_ARGS ?=
# pytest-xdist: one worker per core, each test file kept whole on one worker (its module
# fixtures are built once). WORKERS=1 runs the suite in this process.
WORKERS ?= auto
PYTEST := python -m pytest $(if $(filter 1,$(WORKERS)),,-n $(WORKERS) --dist loadfile)
# `make server`: MLflow on SERVER_HOST:SERVER_PORT, its runs in the PostgreSQL database
# PG_TRACKING_DB, tune's shared studies in PG_STUDIES_DB. Two databases, because MLflow and Optuna
# each keep their schema's version in a table named alembic_version. The role's password comes
# from PGPASSWORD or ~/.pgpass, never from a default or the command line (README).
SERVER_HOST ?= 0.0.0.0
SERVER_PORT ?= 5000
# Host names teammates reach it by, beyond MLflow's default (localhost and private IPs)
ALLOWED_HOSTS ?=
PG_PORT ?= 5432
PG_USER ?= neuroflow
PG_TRACKING_DB ?= mlflow
PG_STUDIES_DB ?= optuna

.PHONY: setup run ui postgres server check test bench lint envs clean

setup:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@stamp=$(VENV)/.requirements-$$(cat requirements*.txt | sha256sum | cut -c1-16); \
	if [ ! -f $$stamp ]; then \
		echo "installing requirements-dev.txt into $(VENV)"; \
		$(BIN)/python -m pip install --quiet --upgrade pip && \
		$(BIN)/python -m pip install --quiet -r requirements-dev.txt && \
		rm -f $(VENV)/.requirements-* && touch $$stamp; \
	fi

# The whole pipeline on the offline default data (scikit-learn's digits): prepare, train the
# four families, register and promote them. A second `make run` reuses every finished step.
run: setup
	mkdir -p $(STORE) && cd $(STORE) && mlflow run $(CURDIR) --env-manager local

# The MLflow UI on the store `make run` fills, at http://127.0.0.1:5000
ui: setup
	cd $(STORE) && mlflow ui --backend-store-uri sqlite:///mlflow.db

# Debian's PostgreSQL, started if it is down, with the role (made once, never changed after)
# and the two databases (made once).
postgres: setup
	python -m neuroflow.server.postgres --port $(PG_PORT) --user $(PG_USER) \
		$(PG_TRACKING_DB) $(PG_STUDIES_DB)

# A team's tracking server: teammates `export MLFLOW_TRACKING_URI=http://<this host>:5000`.
# Artifacts go through it, into $(STORE)/server-artifacts.
server: postgres
	mkdir -p $(STORE)/server-artifacts
	mlflow server --backend-store-uri postgresql+psycopg2://$(PG_USER)@127.0.0.1:$(PG_PORT)/$(PG_TRACKING_DB) \
		--serve-artifacts --artifacts-destination $(STORE)/server-artifacts \
		--host $(SERVER_HOST) --port $(SERVER_PORT) $(if $(ALLOWED_HOSTS),--allowed-hosts $(ALLOWED_HOSTS))

# The fast tier, for every edit: in-process tests on tiny data, about a minute on 2 cores.
check: setup lint
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

# Both tiers: the fast one and the end-to-end tests (the real `mlflow run`, servers, serving,
# notebooks, env managers). What CI runs.
test: setup lint
	$(PYTEST) $(PYTEST_ARGS)

# This project's training against the pytorch/examples MNIST loop, side by side; see README.
bench: setup
	python -m benchmarks

lint: setup
	ruff check .
	ruff format --check .

# Regenerate conda.yaml and python_env.yaml from the pins in requirements.txt.
envs: setup
	python -m neuroflow.envs

clean:
	rm -rf mlruns mlartifacts mlflow.db .pytest_cache .ruff_cache benchmark-results.json
