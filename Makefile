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

.PHONY: setup run ui check test bench lint envs clean

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
