"""Fixtures that shrink every test: tiny synthetic images, a tiny git checkout, throwaway MLflow
stores (made once and copied where a test needs data or models already in them), CPU only, one
thread per worker. Throwaway PostgreSQL databases for the tests of a team's server."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import (
    GIT,
    MNIST_T10K,
    commit_all,
    copy_of,
    new_store,
    tracking_server,
    using_store,
    write_idx_folder,
)


def pytest_configure(config):
    """With the suite spread over several worker processes (pytest -n), one torch thread each,
    and for every process a worker starts: the workers share the cores, and more threads than
    cores only wait on each other. No process of the tests sends MLflow's usage telemetry: it
    has nothing to report, and on a machine without the internet each process spent about 3 s
    on it."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if getattr(config.option, "numprocesses", None) or os.environ.get("PYTEST_XDIST_WORKER"):
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")


# The files whose tests take longest (--durations), longest first: those of the slow tier by
# their time in `make test`, then those of the fast tier by theirs in `make check`. pytest-xdist
# hands whole files to the workers in the order collected; one of these started last would
# keep its worker busy while the other idles.
LONGEST_FIRST = (
    "test_benchmarks.py",
    "test_faults.py",
    "test_load.py",
    "test_run_anywhere.py",
    "test_pipeline.py",
    "test_colour.py",
    "test_folders.py",
    "test_accuracy.py",
    "test_databricks.py",
    "test_server_security.py",
    "test_spark.py",
    "test_data_identity.py",
    "test_bad_input.py",
    "test_tune.py",
    "test_registry.py",
    "test_dcgan_job.py",
    "test_safe_models.py",
    "test_jobs.py",
    "test_predict.py",
    "test_cache.py",
    "test_model_card.py",
)


def pytest_collection_modifyitems(items):
    """The longest files first; the rest, and the tests within each file, as collected."""
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_terminal_summary(terminalreporter):
    """What the passing slow tests printed (the counts they checked, timings) into the log."""
    printed = [
        (report.nodeid, line)
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call" and "slow" in report.keywords
        for line in report.capstdout.splitlines()
    ]
    if printed:
        terminalreporter.write_sep("-", "printed by the slow tests")
        for nodeid, line in printed:
            terminalreporter.write_line(f"{nodeid}: {line}")


@pytest.fixture(scope="session", autouse=True)
def _mlflow_evaluation_draws_no_confusion_matrix():
    """MLflow's evaluation draws a confusion matrix with pyplot for every version promote
    scores: half a second each, over 10 s of the fast tier, for a picture no test but one looks
    at. In this process it is left undrawn; that test asks for `draws_confusion_matrix`, and
    every `mlflow run` (the slow tier's) draws it as users see it."""
    from mlflow.models.evaluation.evaluators.classifier import ClassifierEvaluator

    drawn = ClassifierEvaluator._log_confusion_matrix
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ClassifierEvaluator, "_log_confusion_matrix", lambda self: None)
        yield drawn


@pytest.fixture
def draws_confusion_matrix(monkeypatch, _mlflow_evaluation_draws_no_confusion_matrix):
    """MLflow's evaluation as users run it, its confusion matrix drawn."""
    from mlflow.models.evaluation.evaluators.classifier import ClassifierEvaluator

    drawn = _mlflow_evaluation_draws_no_confusion_matrix
    monkeypatch.setattr(ClassifierEvaluator, "_log_confusion_matrix", drawn)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture
def idx_folder(tmp_path: Path) -> Path:
    """A folder with a train pair (raw IDX) and an official test pair (gzip IDX)."""
    return write_idx_folder(tmp_path / "idx")


# A tiny project: its code (the library, a step, the MLproject and the pins) beside what is not
# code (the README, tests, notebooks, and a .gitignore that keeps bytecode out of git).
TINY_PROJECT = {
    "MLproject": "name: demo\n",
    "conda.yaml": "name: demo\n",
    "requirements.txt": "numpy==2.4.6\n",
    "neuroflow/core.py": "x = 1\n",
    "steps/demo.py": "from neuroflow.core import x\n",
    "README.md": "# demo\n",
    "tests/test_core.py": "def test_x():\n    assert True\n",
    "notebooks/explore.ipynb": "{}\n",
    ".gitignore": "__pycache__/\n",
}


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git repository at tmp_path/checkout holding TINY_PROJECT in one commit."""
    root = tmp_path / "checkout"
    for name, text in TINY_PROJECT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    subprocess.run([*GIT, "init", "-q"], cwd=root, check=True)
    commit_all(root, "one")
    return root


@pytest.fixture
def tracking(tmp_path: Path):
    """A fresh sqlite MLflow store under tmp_path, used by this process and its children."""
    store = tmp_path / "store"
    store.mkdir()
    with using_store(store, new_store(store)) as uri:
        yield uri


@pytest.fixture(scope="session")
def prepared_store(tmp_path_factory) -> SimpleNamespace:
    """Made once: a store in which preprocess has prepared an IDX folder of synthetic digits
    (300 to train and validate on, 100 to test). `prepared` gives each test a copy."""
    import mlflow

    from neuroflow.jobs.preprocess import preprocess
    from neuroflow.settings import PrepareConfig

    root = tmp_path_factory.mktemp("prepared")
    folder = root / "store"
    folder.mkdir()
    with using_store(folder, new_store(folder)), mlflow.start_run():
        ref = preprocess(PrepareConfig(dataset="idx", data_dir=str(write_idx_folder(root / "idx"))))
    return SimpleNamespace(folder=folder, ref=ref)


@pytest.fixture
def prepared(prepared_store, tmp_path: Path):
    """This test's own copy of prepared_store as its tracking store; the DataRef of the prepared
    dataset in it."""
    with copy_of(prepared_store.folder, tmp_path):
        yield prepared_store.ref


@pytest.fixture
def mnist_t10k() -> Path:
    if not MNIST_T10K.is_dir():
        pytest.skip(f"real MNIST not present at {MNIST_T10K}")
    return MNIST_T10K


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> str:
    """One real `mlflow server`, shared by every test that needs a server it does not stop;
    its URL. Each file keeps to names (experiments, models) of its own on it."""
    with tracking_server(tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_role() -> SimpleNamespace:
    """A throwaway role on the local PostgreSQL, this process's own (each pytest-xdist worker is
    one), with a random password, made as `make postgres` makes roles (the cluster started if it
    is down) and dropped at the end with every database it owns. Without PostgreSQL, or without
    the rights to make a role (root, or sudo), the tests that need it skip, except under .ci/run
    (NEUROFLOW_POSTGRES=required), where they fail."""
    import click

    from neuroflow.platforms import postgres as pg

    role = SimpleNamespace(
        user=f"test_{os.getpid()}_{secrets.token_hex(3)}",
        password=secrets.token_urlsafe(18),
        port=pg.PORT,
        databases=[],
    )
    try:
        pg.start_cluster(role.port)
        pg.create(role.user, (), role.port, role.password)
    except click.ClickException as error:
        message = f"no PostgreSQL to make a throwaway role on ({error.format_message()})"
        if os.environ.get("NEUROFLOW_POSTGRES") == "required":
            pytest.fail(message)
        pytest.skip(f"{message}; `apt-get install postgresql` provides it")
    yield role
    pg.drop(role.user, role.databases, role.port)


@pytest.fixture(scope="session")
def postgres(postgres_role):
    """`postgres(name)`: the URL, with the password in it, of a new, empty database on the local
    PostgreSQL owned by postgres_role."""
    import psycopg2

    from neuroflow.platforms import postgres as pg

    role = postgres_role
    connection = psycopg2.connect(
        host=pg.HOST, port=role.port, user=role.user, password=role.password, dbname="postgres"
    )
    connection.autocommit = True  # CREATE DATABASE runs outside a transaction

    def database(name: str) -> str:
        role.databases.append(f"{role.user}_{name}")
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {role.databases[-1]}")
        return pg.url(role.databases[-1], role.user, role.port, role.password)

    yield database
    connection.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request) -> str:
    """Each database a team's `mlflow server` may keep its runs in, in turn, for the module's
    tests: "" for sqlite (tracking_server's own file), then a new PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("postgres")(request.module.__name__.replace(".", "_"))
