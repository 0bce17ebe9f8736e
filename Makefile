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
# fixtures are built once), the longest files first (tests/conftest.py: LONGEST_FIRST; xdist
# would otherwise order them by their count of tests). WORKERS=1 runs the suite in this process.
WORKERS ?= auto
# PYTHONDONTWRITEBYTECODE emptied: pytest then keeps the test files as it rewrote them for its
# assertions (tests/__pycache__, ignored by git); without them every worker rewrites every test
# file again, 2 s of each worker's start.
PYTEST := PYTHONDONTWRITEBYTECODE= python -m pytest \
	$(if $(filter 1,$(WORKERS)),,-n $(WORKERS) --dist loadfile --no-loadscope-reorder)
# `make server`: MLflow with authentication on SERVER_HOST:SERVER_PORT (localhost unless told
# otherwise; another host needs ALLOWED_HOSTS, the names teammates reach it by). Its runs live
# in the PostgreSQL database PG_TRACKING_DB, its users in PG_AUTH_DB, tune's shared studies in
# PG_STUDIES_DB: MLflow, its auth app and Optuna each keep their schema's version in a table
# named alembic_version. There are no default passwords: the admin password and the server's
# secret key come from the environment or SERVER_SECRETS, PostgreSQL's from PGPASSWORD or
# ~/.pgpass (README: A team's tracking server). TLS_CERT and TLS_KEY serve HTTPS, or
# TLS_BY_PROXY=true says a reverse proxy does; SERVER_WORKERS sets its processes (MLflow's 4).
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5000
ALLOWED_HOSTS ?=
SERVER_SECRETS ?= $(HOME)/.config/neuroflow/server.env
DEFAULT_PERMISSION ?= READ
TLS_CERT ?=
TLS_KEY ?=
TLS_BY_PROXY ?= false
SERVER_WORKERS ?=
PG_PORT ?= 5432
PG_USER ?= neuroflow
PG_TRACKING_DB ?= mlflow
PG_AUTH_DB ?= mlflow_auth
PG_STUDIES_DB ?= optuna

.PHONY: setup run ui postgres server check test bench lint envs mlproject clean

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
# and the databases (made once).
postgres: setup
	python -m neuroflow.platforms.postgres --port $(PG_PORT) --user $(PG_USER) \
		$(PG_TRACKING_DB) $(PG_AUTH_DB) $(PG_STUDIES_DB)

# A team's tracking server: teammates `export MLFLOW_TRACKING_URI=http://<this host>:5000` and
# their credentials. Artifacts go through it, into $(STORE)/server-artifacts.
server: postgres
	python -m neuroflow.server start --host $(SERVER_HOST) --port $(SERVER_PORT) \
		$(if $(ALLOWED_HOSTS),--allowed-hosts $(ALLOWED_HOSTS)) --secrets $(SERVER_SECRETS) \
		--artifacts $(STORE)/server-artifacts --state $(STORE)/server \
		--pg-port $(PG_PORT) --pg-user $(PG_USER) --tracking-db $(PG_TRACKING_DB) \
		--auth-db $(PG_AUTH_DB) --default-permission $(DEFAULT_PERMISSION) \
		$(if $(TLS_CERT),--tls-cert $(TLS_CERT) --tls-key $(TLS_KEY)) \
		$(if $(filter true,$(TLS_BY_PROXY)),--tls-by-proxy) \
		$(if $(SERVER_WORKERS),--workers $(SERVER_WORKERS))

# The fast tier, for every edit: in-process tests on tiny data, 80-90 s on 2 cores. Its
# throwaway stores and files go to memory where /dev/shm is mounted: MLflow's sqlite store
# syncs each write to disk, a tenth of the tier's time on a disk. pytest keeps only the
# folders of tests that failed.
FAST_TMP := $(if $(wildcard /dev/shm/.),/dev/shm)
check: setup lint
	$(if $(FAST_TMP),TMPDIR=$(FAST_TMP)) $(PYTEST) -m "not slow" $(PYTEST_ARGS)

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
	python -m neuroflow.platforms.envs

# Regenerate MLproject from the steps' options (the settings) and the families.
mlproject: setup
	python -m neuroflow.mlproject

clean:
	rm -rf mlruns mlartifacts mlflow.db .pytest_cache .ruff_cache benchmark-results.json
