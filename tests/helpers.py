"""Helpers the tests share: paths, synthetic images, and running the real `mlflow run` CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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
    entry_point: str, cwd: Path, tracking_uri: str, project: Path = ROOT, **params
) -> MlflowRun:
    """`mlflow run <project> -e <entry_point> --env-manager local -P k=v ...`, as a user types
    it, with the step's `python` resolving to this interpreter."""
    command = [sys.executable, "-m", "mlflow", "run", str(project), "-e", entry_point]
    command += ["--env-manager", "local"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("MLFLOW_RUN_ID", None)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
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

    def run(self, entry_point: str, project: Path = ROOT, **params) -> MlflowRun:
        return mlflow_run(entry_point, self.folder, self.uri, project, **params)

    def get(self, run_id: str):
        return self.client.get_run(run_id)

    def runs(self, filter_string: str = ""):
        return self.client.search_runs(["0"], filter_string)
