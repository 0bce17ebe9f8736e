"""What the shipped defaults reach: the classifiers' test accuracy on real MNIST and on the
digits, and the default DCGAN's sample quality. Each step runs in this process as `mlflow run`
runs it (helpers.step_in_process), on the defaults of the MLproject: these tests are about what
training reaches; the `mlflow run` CLI itself is proved in test_mlflow_run.py. Minutes of
training, so they are slow."""

from __future__ import annotations

import pytest

from helpers import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Store, str]:
    """A store where preprocess has prepared the default digits; its run id."""
    store = Store(tmp_path_factory.mktemp("digits"))
    result = store.step("preprocess")
    assert result.returncode == 0, result.stderr
    return store, result.run_id


def test_real_mnist_split_by_fraction(mnist_t10k, tmp_path):
    store = Store(tmp_path)
    prepared = store.step("preprocess", dataset="idx", data_dir=mnist_t10k)
    assert prepared.returncode == 0, prepared.stderr
    assert store.get(prepared.run_id).data.metrics["test_count"] == 2000  # 20% of 10,000
    floors = {"train_cnn": 0.97, "train_mlp": 0.94, "train_rnn": 0.96}
    for entry_point, floor in floors.items():
        result = store.step(entry_point)
        assert result.returncode == 0, result.stderr
        assert store.get(result.run_id).data.metrics["test_accuracy"] >= floor, entry_point


@pytest.mark.parametrize(("cell", "floor"), [("lstm", 0.93), ("gru", 0.93)])
def test_train_rnn_on_the_default_digits(digits, cell, floor):
    store, preprocess_id = digits
    result = store.step("train_rnn", cell=cell)
    assert result.returncode == 0, result.stderr
    run = store.get(result.run_id)
    assert run.data.params["cell"] == cell and run.data.params["data_run_id"] == preprocess_id
    assert run.data.metrics["test_accuracy"] >= floor


def test_train_dcgan_with_its_defaults_learns_the_digits(digits):
    """The whole default run: FID must fall clearly and every class must appear."""
    store, _ = digits
    result = store.step("train_dcgan")
    assert result.returncode == 0, result.stderr
    run = store.get(result.run_id)
    history = store.client.get_metric_history(result.run_id, "fid")
    epochs, every = int(run.data.params["epochs"]), int(run.data.params["score_every"])
    assert [m.step for m in history] == list(range(every, epochs + 1, every))  # 20 of 5
    fid = [m.value for m in history]
    assert fid[-1] < fid[0] * 0.75, fid
    assert run.data.metrics["class_coverage"] >= 0.8
    (quick,) = store.runs(f"tags.mlflow.parentRunId = '{result.run_id}' and tags.family = 'cnn'")
    assert run.data.params["evaluator_uri"] == quick.data.tags["model_uri"]
    samples = {f.path for f in store.client.list_artifacts(result.run_id, "samples")}
    assert "samples/final.png" in samples and len(samples) == len(fid) + 1


def test_the_digits_champion_cnn_reads_real_handwriting(digits, mnist_t10k):
    """Trained on the default digits (framed as MNIST's, augmented), the CNN reads the real
    MNIST test images it never saw: the last 2,000 of t10k."""
    import mlflow

    from neuroflow.data.sources import load_source
    from neuroflow.tracking.models import load_model
    from neuroflow.training.batches import to_device
    from neuroflow.training.classifier import evaluate

    store, _ = digits
    result = store.step("train_cnn")
    assert result.returncode == 0, result.stderr
    run = store.get(result.run_id)
    assert run.data.metrics["test_accuracy"] >= 0.97  # its own digits test split
    (part,) = load_source("idx", mnist_t10k).parts
    real = to_device(part.images[-2000:], part.labels[-2000:], "cpu")
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None  # no leak
    mlflow.set_tracking_uri(store.uri)
    try:
        model = load_model(run.data.tags["model_uri"])
    finally:
        mlflow.set_tracking_uri(before)
    accuracy = evaluate(model, *real).accuracy
    assert accuracy >= 0.60, accuracy  # 0.19 when the digits were stretched to the frame
