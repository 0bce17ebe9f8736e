"""End to end through the real `mlflow run` CLI, from an empty folder with a fresh store. Bad
input through the same CLI is in test_bad_input.py; two `mlflow run` processes with the same
seed giving the same metrics, in test_run_anywhere.py; what the defaults reach, in
test_accuracy.py."""

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


@pytest.fixture(scope="module")
def cnn(digits) -> str:
    """`mlflow run . -e train_cnn` with its defaults on the digits; the run id."""
    store, _ = digits
    result = store.run("train_cnn")
    assert result.returncode == 0, result.stderr
    return result.run_id


@pytest.fixture
def use_store():
    def use(store: Store):
        mlflow.set_tracking_uri(store.uri)

    yield use
    mlflow.set_tracking_uri(None)


def test_preprocess_then_train_cnn_on_the_default_digits(digits, cnn, use_store):
    store, preprocess_id = digits
    run = store.get(cnn)
    assert run.info.status == "FINISHED"
    assert run.data.params["data_run_id"] == preprocess_id
    assert run.data.metrics["test_accuracy"] >= 0.95
    commit, _ = git_state(ROOT)
    assert run.data.tags["git_commit"] == commit
    assert run.data.tags["versions.torch"].startswith("2.14.1")
    assert "system/cpu_utilization_percentage" in run.data.metrics  # sampled while it ran
    assert run.data.metrics["system/system_memory_usage_megabytes"] > 0

    use_store(store)
    data = load_prepared(
        Path(mlflow.artifacts.download_artifacts(f"runs:/{preprocess_id}/prepared"))
    )
    model = mlflow.pyfunc.load_model(run.data.tags["model_uri"])
    predicted = model.predict(data.images["test"].astype(np.float32))  # raw 0..255 pixels
    accuracy = (predicted == data.labels["test"]).mean()
    assert accuracy == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-6)


def test_train_mlp_alone_on_a_fresh_store_prepares_its_data(tmp_path):
    store = Store(tmp_path)
    result = store.run("train_mlp", epochs=2)
    assert result.returncode == 0, result.stderr
    (child,) = store.runs(f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert child.data.tags["step"] == "preprocess" and child.info.status == "FINISHED"
    run = store.get(result.run_id)
    assert run.data.params["data_run_id"] == child.info.run_id
    assert run.data.metrics["test_accuracy"] > 0.8


def test_train_dcgan_with_wgan_gp_is_judged_the_same_way(digits, cnn):
    store, _ = digits
    evaluator_uri = store.get(cnn).data.tags["model_uri"]
    result = store.run(
        "train_dcgan",
        loss="wgan-gp",
        epochs=3,
        score_every=1,
        max_batches=10,
        evaluator=evaluator_uri,
    )
    assert result.returncode == 0, result.stderr
    run = store.get(result.run_id)
    assert run.data.params["evaluator_uri"] == evaluator_uri
    for key in ("fid", "inception_score", "class_coverage"):
        assert len(store.client.get_metric_history(result.run_id, key)) == 3
