"""Helpers the tests share: paths, synthetic images, running the real `mlflow run` CLI, and
servers on loopback ports."""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
MNIST_T10K = ROOT.parent / "shared" / "datasets" / "mnist-t10k"  # real MNIST, present in CI only


def write_idx_folder(folder: Path) -> Path:
    """A folder with a train pair (raw IDX) of 300 synthetic digits and an official test pair
    (gzip IDX) of 100."""
    from neuroflow.data.idx import write_idx

    folder.mkdir(parents=True)
    train_images, train_labels = synthetic_digits(300, seed=1)
    test_images, test_labels = synthetic_digits(100, seed=2)
    write_idx(folder / "train-images-idx3-ubyte", train_images)
    write_idx(folder / "train-labels-idx1-ubyte", train_labels)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", test_images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", test_labels)
    return folder


def synthetic_digits(count: int, size: int = 28, classes: int = 10, seed: int = 0):
    """(count, size, size) uint8 images whose class is a bright horizontal bar at a
    class-dependent height, plus noise: easy to learn, impossible to learn without pixels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(count, size, size), dtype=np.uint8)
    rows = (labels * (size - 2) // max(classes - 1, 1)).astype(int)
    for image, row in zip(images, rows, strict=True):
        image[row : row + 2, 2:-2] = 255
    return images, labels.astype(np.uint8)


def tinted(images: np.ndarray, seed: int = 0, contrast: float = 160.0) -> np.ndarray:
    """(N, H, W) grey digits (white ink on black) -> (N, H, W, 3) uint8: each digit's ink in a
    random colour on a background of another random colour, the two at least `contrast` apart
    in RGB. Their luma may be alike, so in grey many digits all but vanish."""
    rng = np.random.default_rng(seed)
    ink, paper = rng.integers(0, 256, (2, len(images), 3)).astype(np.float64)
    while (close := np.linalg.norm(ink - paper, axis=1) < contrast).any():
        paper[close] = rng.integers(0, 256, (int(close.sum()), 3))
    share = images.astype(np.float64)[..., None] / 255  # (N, H, W, 1)
    mixed = paper[:, None, None] + (ink - paper)[:, None, None] * share
    return np.rint(mixed).astype(np.uint8)


def write_pictures(folder: Path, images: np.ndarray, labels: np.ndarray, names=None) -> Path:
    """Each image as <folder>/<class name>/<running number>.png, in the order given."""
    from PIL import Image

    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        home = folder / (names[label] if names else str(label))
        home.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(home / f"{index:05d}.png")
    return folder


@dataclass
class MlflowRun:
    returncode: int
    stderr: str
    run_id: str | None  # the run `mlflow run` created, if it got that far

    def error_lines(self) -> list[str]:
        """The lines our steps print for a user error (`<step>: error: ...`)."""
        return [line for line in self.stderr.splitlines() if ": error: " in line]


def mlflow_run(
    entry_point: str,
    cwd: Path,
    tracking_uri: str,
    project: Path | str = ROOT,
    options: tuple[str, ...] = ("--env-manager", "local"),
    env: dict | None = None,
    **params,
) -> MlflowRun:
    """`mlflow run <project> -e <entry_point> <options> -P k=v ...`, as a user types it, with
    `--env-manager local` unless `options` say otherwise, and `python` resolving to this
    interpreter."""
    command = mlflow_run_command(entry_point, project, options, **params)
    env = mlflow_run_env(tracking_uri, **(env or {}))
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    # The last "Run (ID ...)" line is this run's own; children of main print theirs earlier.
    found = re.findall(r"Run \(ID '([0-9a-f]{32})'\)", result.stderr)
    return MlflowRun(result.returncode, result.stderr, found[-1] if found else None)


def mlflow_run_command(
    entry_point: str,
    project: Path | str = ROOT,
    options: tuple[str, ...] = ("--env-manager", "local"),
    **params,
) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "run", str(project), "-e", entry_point, *options]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    return command


def mlflow_run_env(tracking_uri: str, **extra: str) -> dict[str, str]:
    """The environment `mlflow run` is started in: tracking to `tracking_uri`, in no run."""
    env = python_env(MLFLOW_TRACKING_URI=tracking_uri, **extra)
    env.pop("MLFLOW_RUN_ID", None)
    return env


GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def commit_all(root: Path, message: str) -> None:
    """Commit every change in the git repository at `root`, new files included."""
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", message], cwd=root, check=True)


def project_snapshot(dest: Path) -> Path:
    """The working tree (tracked and untracked files, not ignored ones) committed into a fresh
    git repository at `dest`: a clean checkout of exactly the code under test."""
    files = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=dest, check=True)
    commit_all(dest, "snapshot")
    return dest


# Where the empty stores are kept between runs, one per version of MLflow and of what migrates
# its tables: creating the tables costs 1-2 s, in each worker of each run; copying, milliseconds.
EMPTY_STORES = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neuroflow"


@functools.cache
def _empty_store() -> Path:
    """An sqlite store as MLflow creates it, made once for these versions of MLflow, SQLAlchemy
    and Alembic (in EMPTY_STORES), and by whichever process comes first."""
    import alembic
    import mlflow
    import sqlalchemy

    versions = f"mlflow-{mlflow.__version__}-sqlalchemy-{sqlalchemy.__version__}"
    kept = EMPTY_STORES / f"empty-store-{versions}-alembic-{alembic.__version__}.db"
    if not kept.exists():
        folder = Path(tempfile.mkdtemp(prefix="neuroflow-empty-store-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
        kept.parent.mkdir(parents=True, exist_ok=True)
        made = kept.with_name(f"{kept.name}.{os.getpid()}")
        shutil.copyfile(folder / "mlflow.db", made)
        made.replace(kept)  # whole, or not at all: another worker may be making it too
    return kept


def new_store(folder: Path) -> str:
    """A fresh, empty sqlite store at `folder`/mlflow.db, whose Default experiment keeps its
    artifacts in `folder`/mlruns/0 as if MLflow had created it there; returns its URI."""
    database = folder / "mlflow.db"
    shutil.copyfile(_empty_store(), database)
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            (str(folder / "mlruns" / "0"),),
        )
    return f"sqlite:///{database}"


def copy_store(source: Path, dest: Path) -> str:
    """A copy of the sqlite store and artifacts in folder `source` at `dest`, as if its runs had
    been made there: the paths into `source` that MLflow wrote (artifact locations in the
    database, each logged model's MLmodel file) point into `dest`, and the digests recorded of
    each model's files (its manifests, the model_digest tags) are those of the files now.
    Returns its URI."""
    from neuroflow.tracking.digests import MANIFEST, digest_of

    shutil.copytree(source, dest)
    old_path, new_path = f"{source}{os.sep}", f"{dest}{os.sep}"
    replaced = {old_path: new_path}
    digests = {}  # an MLmodel's sha256 before its paths were rewritten: its sha256 after
    for mlmodel in dest.rglob("MLmodel"):
        before = mlmodel.read_text()
        mlmodel.write_text(before.replace(old_path, new_path))
        digests[digest_of(before)] = digest_of(mlmodel.read_text())
    for manifest in dest.rglob(MANIFEST):
        before = manifest.read_text()
        after = before
        for old, new in digests.items():
            after = after.replace(old, new)
        manifest.write_text(after)
        replaced[digest_of(before)] = digest_of(after)
    with contextlib.closing(sqlite3.connect(dest / "mlflow.db")) as connection, connection:
        tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        for (table,) in tables.fetchall():
            for column in connection.execute(f'PRAGMA table_info("{table}")').fetchall():
                name, kind = column[1], column[2].upper()
                if not any(text in kind for text in ("CHAR", "TEXT", "CLOB")):
                    continue
                for old, new in replaced.items():
                    connection.execute(
                        f'UPDATE "{table}" SET "{name}" = replace("{name}", ?, ?) '
                        f'WHERE instr("{name}", ?) > 0',
                        (old, new, old),
                    )
    return f"sqlite:///{dest / 'mlflow.db'}"


@contextlib.contextmanager
def copy_of(source: Path, tmp_path: Path):
    """A copy of the store in folder `source`, at `tmp_path`/store, used for the `with` body."""
    folder = tmp_path / "store"
    with using_store(folder, copy_store(source, folder)) as uri:
        yield uri


@contextlib.contextmanager
def using_store(folder: Path, uri: str):
    """This process tracks to `uri` from `folder` (where MLflow's relative paths start) for the
    `with` body, with no run or experiment inherited from the environment; runs left open are
    ended afterwards."""
    import mlflow

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        try:
            yield uri
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)


class Store:
    """A folder where `mlflow run` is started from, tracking to its own new sqlite store, or to
    the tracking server at `uri`."""

    def __init__(self, folder: Path, uri: str = ""):
        self.folder = folder
        self.uri = uri or new_store(folder)
        self.client = MlflowClient(tracking_uri=self.uri)

    def run(
        self,
        entry_point: str,
        project: Path | str = ROOT,
        options: tuple[str, ...] = ("--env-manager", "local"),
        env: dict | None = None,
        **params,
    ) -> MlflowRun:
        return mlflow_run(entry_point, self.folder, self.uri, project, options, env, **params)

    def step(self, entry_point: str, **params) -> MlflowRun:
        """The entry point run in this process, as `mlflow run` would run it (step_in_process)."""
        return step_in_process(entry_point, self.uri, **params)

    def get(self, run_id: str):
        return self.client.get_run(run_id)

    def runs(self, filter_string: str = ""):
        return self.client.search_runs(["0"], filter_string)


MLPROJECT = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]


def step_in_process(entry_point: str, tracking_uri: str, **params) -> MlflowRun:
    """What `mlflow run <project> -e <entry point> -P k=v ...` does, done in this process: a run
    is created with every parameter logged (defaults included), the entry point's MLproject
    command is filled in with them, the step runs through its own `cli.run` in the project
    folder with MLFLOW_RUN_ID naming that run, and the run is marked FAILED when the step exits
    non-zero and FINISHED when it exits zero, unless the step ended the run itself. Returns
    the exit code and what the step wrote to stderr, as mlflow_run does."""
    import mlflow
    from mlflow.entities import Param

    from neuroflow import cli

    spec = MLPROJECT[entry_point]
    values = {name: str(p["default"]) for name, p in spec.get("parameters", {}).items()}
    values.update({key: str(value) for key, value in params.items()})
    client = MlflowClient(tracking_uri=tracking_uri)
    tags = {
        "mlflow.source.name": str(ROOT),
        "mlflow.source.type": "PROJECT",
        "mlflow.project.entryPoint": entry_point,
    }
    run_id = client.create_run("0", tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(key, value) for key, value in values.items()])
    command = shlex.split(spec["command"].format(**{k: shlex.quote(v) for k, v in values.items()}))
    assert command[:3] == ["python", "-m", f"steps.{entry_point}"], command
    step = getattr(importlib.import_module(f"steps.{entry_point}"), entry_point)

    stderr = io.StringIO()
    uri_before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.setenv("MLFLOW_RUN_ID", run_id)
        patch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        patch.setenv("MLFLOW_EXPERIMENT_ID", "0")
        patch.setattr(sys, "argv", [f"steps/{entry_point}.py", *command[3:]])
        patch.chdir(ROOT)
        mlflow.set_tracking_uri(tracking_uri)
        try:
            cli.run(step)  # always ends in sys.exit, with the step's exit code
        except SystemExit as exit:
            code = exit.code
        finally:
            mlflow.set_tracking_uri(uri_before)
    assert mlflow.active_run() is None, "the step left its run open"
    if client.get_run(run_id).info.status in ("RUNNING", "SCHEDULED"):
        client.set_terminated(run_id, "FINISHED" if code == 0 else "FAILED")
    return MlflowRun(code, stderr.getvalue(), run_id)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def python_env(**extra: str) -> dict[str, str]:
    """This environment, with `python` and `mlflow` resolving to this interpreter's."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, **extra}


@contextlib.contextmanager
def serving(command: list[str], ready_url: str, timeout: float = 180, **popen):
    """Start a server process, wait until `ready_url` answers, and stop it afterwards. Its
    output goes to a file (a pipe nobody reads would fill up and stall it)."""
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **popen)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(ready_url, timeout=5)
                    break
                except OSError:
                    if server.poll() is not None:
                        log.seek(0)
                        raise AssertionError(log.read().decode()[-3000:]) from None
                    assert time.monotonic() < deadline, f"{ready_url} silent for {timeout} s"
                    time.sleep(1)
            yield server
        finally:
            server.terminate()
            server.wait(timeout=30)


@contextlib.contextmanager
def tracking_server(folder: Path, port: int | None = None, backend: str = ""):
    """A real `mlflow server` on a loopback port, with its proxied artifacts in `folder` and its
    runs in the database at `backend` (default: an sqlite file in `folder`); yields its URL.
    MLflow's job runner (eight huey worker processes, each importing mlflow) is left off:
    nothing here submits server jobs."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", backend or f"sqlite:///{folder / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(folder / "artifacts")]
    env = python_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with serving(command, f"{url}/health", env=env, cwd=folder):
        yield url


def registry_bytes(client: MlflowClient) -> bytes:
    """Every registered model and model version, all their fields, as canonical JSON."""
    models = [
        plain(client.get_registered_model(model.name))
        for model in client.search_registered_models(max_results=1000)
    ]
    versions = [
        plain(client.get_model_version(version.name, version.version))
        for version in client.search_model_versions()
    ]
    state = {"models": sorted(models, key=canonical), "versions": sorted(versions, key=canonical)}
    return canonical(state).encode()


def plain(value):
    """JSON-ready: MLflow entities (most iterate as (property, value) pairs) become dicts,
    lists are sorted, so the same registry always gives the same text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, Sequence | Set):  # protobuf's repeated fields, from a server, too
        return sorted((plain(item) for item in value), key=canonical)
    try:
        fields = dict(value)
    except (TypeError, ValueError):  # an entity that does not iterate as pairs: its attributes
        fields = vars(value)
    return {str(key): plain(item) for key, item in fields.items()}


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True)
