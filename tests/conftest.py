"""Fixtures that shrink every test: tiny synthetic images, a throwaway MLflow store, CPU only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import MNIST_T10K, synthetic_digits


@pytest.fixture
def idx_folder(tmp_path: Path) -> Path:
    """A folder with a train pair (raw IDX) and an official test pair (gzip IDX)."""
    from neuroflow.data.idx import write_idx

    folder = tmp_path / "idx"
    folder.mkdir()
    train_images, train_labels = synthetic_digits(300, seed=1)
    test_images, test_labels = synthetic_digits(100, seed=2)
    write_idx(folder / "train-images-idx3-ubyte", train_images)
    write_idx(folder / "train-labels-idx1-ubyte", train_labels)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", test_images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", test_labels)
    return folder


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch):
    """A fresh sqlite MLflow store under tmp_path, used by this process and its children."""
    import mlflow

    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.chdir(store)  # the default artifact root ./mlruns lands beside the store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def mnist_t10k() -> Path:
    if not MNIST_T10K.is_dir():
        pytest.skip(f"real MNIST not present at {MNIST_T10K}")
    return MNIST_T10K


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
