"""Helpers the tests share: paths, synthetic images, running the real `mlflow run` CLI, and
servers on loopback ports."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
MNIST_T10K = ROOT.parent / "shared" / "datasets" / "mnist-t10k"  # real MNIST, present in CI only


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
    command = [sys.executable, "-m", "mlflow", "run", str(project), "-e", entry_point, *options]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    env = python_env(MLFLOW_TRACKING_URI=tracking_uri, **(env or {}))
    env.pop("MLFLOW_RUN_ID", None)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    # The last "Run (ID ...)" line is this run's own; children of main print theirs earlier.
    found = re.findall(r"Run \(ID '([0-9a-f]{32})'\)", result.stderr)
    return MlflowRun(result.returncode, result.stderr, found[-1] if found else None)


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
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "snapshot"], cwd=dest, check=True)
    return dest


class Store:
    """A folder with its own sqlite store, where `mlflow run` is started from."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.uri = f"sqlite:///{folder / 'mlflow.db'}"
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

    def get(self, run_id: str):
        return self.client.get_run(run_id)

    def runs(self, filter_string: str = ""):
        return self.client.search_runs(["0"], filter_string)


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
