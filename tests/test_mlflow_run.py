"""End to end through the real `mlflow run` CLI, from an empty folder with a fresh store. Bad
input through the same CLI is in test_bad_input.py."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from helpers import ROOT, Store
from neuroflow.data.prepared import load_prepared
from neuroflow.tracking.lineage import git_state

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Store, str]:
    """An empty folder where `mlflow run . -e preprocess` has run once."""
    store = Store(tmp_path_factory.mktemp("digits"))
    result = store.run("preprocess")
    assert result.returncode == 0, result.stderr
    return store, result.run_id


@pytest.fixture
def use_store():
    def use(store: Store):
        mlflow.set_tracking_uri(store.uri)

    yield use
    mlflow.set_tracking_uri(None)


def test_preprocess_then_train_cnn_on_the_default_digits(digits, use_store):
    store, preprocess_id = digits
    result = store.run("train_cnn")
    assert result.returncode == 0, result.stderr
    run = store.get(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["data_run_id"] == preprocess_id
    assert run.data.metrics["test_accuracy"] >= 0.95
    commit, _ = git_state(ROOT)
    assert run.data.tags["git_commit"] == commit
    assert run.data.tags["versions.torch"].startswith("2.14.1")

    use_store(store)
    data = load_prepared(
        Path(mlflow.artifacts.download_artifacts(f"runs:/{preprocess_id}/prepared"))
    )
    model = mlflow.pyfunc.load_model(run.data.tags["model_uri"])
    predicted = model.predict(data.images["test"].astype(np.float32))  # raw 0..255 pixels
    accuracy = (predicted == data.labels["test"]).mean()
    assert accuracy == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-6)


def test_same_seed_same_metrics_through_mlflow_run(digits):
    store, preprocess_id = digits
    runs = [store.run("train_mlp", data=preprocess_id, epochs=3) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    histories = [
        {key: [m.value for m in store.client.get_metric_history(r.run_id, key)] for key in KEYS}
        for r in runs
    ]
    assert histories[0] == histories[1]
    assert len(histories[0]["val_loss"]) == 3


KEYS = ("train_loss", "val_loss", "val_accuracy", "test_accuracy")


def test_train_mlp_alone_on_a_fresh_store_prepares_its_data(tmp_path):
    store = Store(tmp_path)
    result = store.run("train_mlp", epochs=2)
    assert result.returncode == 0, result.stderr
    (child,) = store.runs(f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert child.data.tags["step"] == "preprocess" and child.info.status == "FINISHED"
    run = store.get(result.run_id)
    assert run.data.params["data_run_id"] == child.info.run_id
    assert run.data.metrics["test_accuracy"] > 0.8


def test_real_mnist_split_by_fraction(mnist_t10k, tmp_path):
    store = Store(tmp_path)
    prepared = store.run("preprocess", dataset="idx", data_dir=mnist_t10k)
    assert prepared.returncode == 0, prepared.stderr
    assert store.get(prepared.run_id).data.metrics["test_count"] == 2000  # 20% of 10,000
    floors = {"train_cnn": 0.97, "train_mlp": 0.94, "train_rnn": 0.96}
    for entry_point, floor in floors.items():
        result = store.run(entry_point)
        assert result.returncode == 0, result.stderr
        assert store.get(result.run_id).data.metrics["test_accuracy"] >= floor, entry_point


@pytest.mark.parametrize(("cell", "floor"), [("lstm", 0.93), ("gru", 0.93)])
def test_train_rnn_on_the_default_digits(digits, cell, floor):
    store, preprocess_id = digits
    result = store.run("train_rnn", cell=cell)
    assert result.returncode == 0, result.stderr
    run = store.get(result.run_id)
    assert run.data.params["cell"] == cell and run.data.params["data_run_id"] == preprocess_id
    assert run.data.metrics["test_accuracy"] >= floor


def test_train_dcgan_with_its_defaults_learns_the_digits(digits):
    """The whole default run: FID must fall clearly and every class must appear."""
    store, _ = digits
    result = store.run("train_dcgan")
    assert result.returncode == 0, result.stderr
    run = store.get(result.run_id)
    fid = [m.value for m in store.client.get_metric_history(result.run_id, "fid")]
    assert len(fid) == int(run.data.params["epochs"])
    assert fid[-1] < fid[0] / 4, fid
    assert run.data.metrics["class_coverage"] >= 0.8
    (quick,) = store.runs(f"tags.mlflow.parentRunId = '{result.run_id}' and tags.family = 'cnn'")
    assert run.data.params["evaluator_uri"] == quick.data.tags["model_uri"]
    samples = {f.path for f in store.client.list_artifacts(result.run_id, "samples")}
    assert "samples/final.png" in samples and len(samples) == len(fid) + 1


def test_train_dcgan_with_wgan_gp_is_judged_the_same_way(digits):
    store, preprocess_id = digits
    evaluator = store.run("train_cnn", data=preprocess_id, epochs=2)
    assert evaluator.returncode == 0, evaluator.stderr
    evaluator_uri = store.get(evaluator.run_id).data.tags["model_uri"]
    result = store.run("train_dcgan", loss="wgan-gp", epochs=3, evaluator=evaluator_uri)
    assert result.returncode == 0, result.stderr
    run = store.get(result.run_id)
    assert run.data.params["evaluator_uri"] == evaluator_uri
    for key in ("fid", "inception_score", "class_coverage"):
        assert len(store.client.get_metric_history(result.run_id, key)) == 3
