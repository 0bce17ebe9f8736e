"""Helpers the tests share: paths, synthetic images, and running the real `mlflow run` CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def mlflow_run(entry_point: str, cwd: Path, tracking_uri: str, **params) -> MlflowRun:
    """`mlflow run <this project> -e <entry_point> --env-manager local -P k=v ...`, as a user
    types it, with the step's `python` resolving to this interpreter."""
    command = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", entry_point]
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
    found = re.search(r"Run \(ID '([0-9a-f]{32})'\)", result.stderr)
    return MlflowRun(result.returncode, result.stderr, found.group(1) if found else None)
