"""The step bodies in-process against a throwaway store: what each logs and how data flows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from neuroflow.data.prepared import load_prepared
from neuroflow.errors import DataError, RunLookupError
from neuroflow.families import CNNConfig, MLPConfig, RNNConfig
from neuroflow.jobs.preprocess import preprocess
from neuroflow.jobs.train_classifier import train_classifier
from neuroflow.settings import PrepareConfig, TrainConfig

FAST = TrainConfig(epochs=2, batch_size=64, max_batches=3, device="cpu")
SMALL_CNN = CNNConfig(channels=(8, 16), hidden=32)
SMALL_MLP = MLPConfig(hidden=(32,))
SMALL = {"cnn": SMALL_CNN, "mlp": SMALL_MLP, "rnn": RNNConfig(cell="gru", hidden_size=16)}
SPLIT_FILES = {
    f"prepared/{s}-{kind}.npy"
    for s in ("train", "val", "test")
    for kind in ("images-00000", "labels", "hashes")
}


def prepare_idx(folder, **overrides):
    with mlflow.start_run():
        return preprocess(PrepareConfig(dataset="idx", data_dir=str(folder), **overrides))


def train(family="cnn", data="latest", config=FAST):
    with mlflow.start_run() as run:
        model_uri = train_classifier(family, SMALL[family], config, data)
    return mlflow.get_run(run.info.run_id), model_uri


# `prepared` (conftest.py): a store of this test's own, with an IDX folder prepared in it.


def test_preprocess_logs_the_prepared_folder_and_its_lineage(prepared):
    run = mlflow.get_run(prepared.run_id)
    assert run.data.tags["step"] == "preprocess"
    assert run.data.tags["data_digest"] == prepared.digest
    assert prepared.uri == f"runs:/{prepared.run_id}/prepared"
    listed = {f.path for f in MlflowClient().list_artifacts(prepared.run_id, "prepared")}
    assert listed == SPLIT_FILES | {"prepared/metadata.json"}
    assert run.data.metrics["test_count"] == 100  # the official t10k pair, whole
    assert run.data.metrics["train_count"] + run.data.metrics["val_count"] == 300
    assert run.data.params["dataset"] == "idx" and run.data.params["seed"] == "0"
    contexts = {
        i.dataset.name: {t.key: t.value for t in i.tags}["mlflow.data.context"]
        for i in run.inputs.dataset_inputs
    }
    assert contexts == {"idx-train": "training", "idx-val": "validation", "idx-test": "testing"}


def test_train_logs_metrics_plots_model_and_lineage(prepared):
    run, model_uri = train("cnn", prepared.run_id)
    run_id = run.info.run_id
    assert run.data.tags["step"] == "train_cnn" and run.data.tags["family"] == "cnn"
    assert run.data.tags["model_uri"] == model_uri
    assert run.data.params["data_uri"] == prepared.uri
    assert run.data.params["data_digest"] == prepared.digest
    assert run.data.params["channels"] == "8,16"
    assert run.data.params["augmented"] == "false"
    for key in ("train_loss", "val_loss", "val_accuracy"):
        history = MlflowClient().get_metric_history(run_id, key)
        assert [m.step for m in history] == [1, 2]
    assert 0 <= run.data.metrics["test_accuracy"] <= 1
    plots = {f.path for f in MlflowClient().list_artifacts(run_id, "plots")}
    assert plots == {"plots/loss_curve.png", "plots/confusion_matrix.png"}
    digests = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
    source_run = mlflow.get_run(prepared.run_id)
    assert digests == {i.dataset.name: i.dataset.digest for i in source_run.inputs.dataset_inputs}
    (model,) = mlflow.search_logged_models(
        filter_string=f"source_run_id = '{run_id}'", output_format="list"
    )
    on_model = {m.key: m for m in model.metrics}
    for key in ("test_accuracy", "test_loss"):
        metric = on_model[key]
        assert metric.value == run.data.metrics[key]
        assert (metric.dataset_name, metric.dataset_digest) == ("idx-test", digests["idx-test"])
    files = {f.path for f in MlflowClient().list_artifacts(run_id, "evaluation")}
    assert files == {"evaluation/confusion_matrix.json", "evaluation/misclassified.npz"}


def test_logged_model_predicts_labels_from_raw_pixels(prepared):
    run, model_uri = train("cnn", prepared.run_id, TrainConfig(epochs=3, device="cpu"))
    data = load_prepared(Path(mlflow.artifacts.download_artifacts(prepared.uri)))
    model = mlflow.pyfunc.load_model(model_uri)
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, 28, 28)
    predicted = model.predict(data.images["test"].astype(np.float32))
    assert predicted.shape == (100,) and predicted.dtype == np.int64
    accuracy = float((predicted == data.labels["test"]).mean())
    assert accuracy == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-6)
    assert accuracy > 0.5  # chance is 0.1: the model really reads the raw pixels


def test_latest_is_the_newest_finished_preprocess_run(tracking, idx_folder):
    prepare_idx(idx_folder, seed=1)
    newest = prepare_idx(idx_folder, seed=2)
    with mlflow.start_run() as failed:
        mlflow.set_tag("step", "preprocess")
    MlflowClient().set_terminated(failed.info.run_id, "FAILED")
    run, _ = train("mlp", "latest")
    assert run.data.params["data_run_id"] == newest.run_id


def test_latest_on_an_empty_store_prepares_digits_in_a_nested_run(tracking):
    run, _ = train("mlp", "latest", dataclasses.replace(FAST, augment="auto"))
    children = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'", output_format="list"
    )
    assert len(children) == 1
    child = children[0]
    assert child.data.tags["step"] == "preprocess" and child.data.params["dataset"] == "digits"
    assert child.info.status == "FINISHED"
    assert run.data.params["data_run_id"] == child.info.run_id
    assert run.data.params["augmented"] == "true"  # augment=auto: on for the digits


def test_augment_auto_leaves_data_other_than_the_digits_as_it_is(prepared):
    run, _ = train("mlp", prepared.run_id, dataclasses.replace(FAST, augment="auto"))
    assert run.data.params["augment"] == "auto" and run.data.params["augmented"] == "false"


def test_data_that_is_not_a_prepared_dataset_is_refused(prepared):
    missing = "0" * 32
    with pytest.raises(RunLookupError, match=f"run {missing} does not exist"):
        train("mlp", missing)
    trained, _ = train("mlp", prepared.run_id)
    with pytest.raises(RunLookupError, match="is a train_mlp run; expected a preprocess run"):
        train("mlp", trained.info.run_id)
    nothing = f"runs:/{prepared.run_id}/nothing: not a prepared dataset"
    with pytest.raises(DataError, match=f"{nothing} \\(cannot read metadata.json: no metadata"):
        train("mlp", f"runs:/{prepared.run_id}/nothing")


def test_same_seed_gives_identical_metrics(prepared):
    first, _ = train("cnn", prepared.run_id)
    second, _ = train("cnn", prepared.run_id)
    client = MlflowClient()
    for key in ("train_loss", "val_loss", "val_accuracy"):
        one = [m.value for m in client.get_metric_history(first.info.run_id, key)]
        two = [m.value for m in client.get_metric_history(second.info.run_id, key)]
        assert one == two
    assert first.data.metrics["test_accuracy"] == second.data.metrics["test_accuracy"]


def test_params_mlflow_run_already_logged_are_kept(prepared):
    with mlflow.start_run() as run:
        mlflow.log_param("lr", "3e-3")  # as `mlflow run -P lr=3e-3` logs it
        config = TrainConfig(epochs=1, lr=3e-3, max_batches=2, device="cpu")
        train_classifier("mlp", SMALL_MLP, config, prepared.run_id)
    assert mlflow.get_run(run.info.run_id).data.params["lr"] == "3e-3"


def test_rnn_logs_like_every_other_classifier(prepared):
    run, model_uri = train(
        "rnn", prepared.run_id, TrainConfig(epochs=2, grad_clip=1.0, device="cpu")
    )
    assert run.data.tags["family"] == "rnn" and run.data.tags["step"] == "train_rnn"
    assert run.data.params["cell"] == "gru" and run.data.params["grad_clip"] == "1.0"
    model = mlflow.pyfunc.load_model(model_uri)
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, 28, 28)
    images = np.zeros((3, 28, 28), np.float32)
    assert model.predict(images).shape == (3,)


def test_a_logged_model_pins_what_it_serves_with_without_scanning_every_package(
    tracking, monkeypatch
):
    import importlib_metadata
    from mlflow.utils import requirements_utils

    from neuroflow.models.build import build_classifier
    from neuroflow.tracking.models import log_classifier, serving_requirements

    scans = []
    scan = importlib_metadata.packages_distributions
    monkeypatch.setattr(
        importlib_metadata, "packages_distributions", lambda: scans.append(1) or scan()
    )
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)  # as in a new process
    model = build_classifier("cnn", SMALL_CNN, (28, 28), 33.0, 78.0, [str(i) for i in range(10)])
    with mlflow.start_run():
        info = log_classifier(model, np.zeros((2, 28, 28), np.uint8))
    folder = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    pins = (folder / "requirements.txt").read_text().split()
    assert set(serving_requirements()) <= set(pins) and len(serving_requirements()) == 3
    assert scans == []
    assert requirements_utils._MODULES_TO_PACKAGES is None  # left for others to build


def test_training_steps_record_system_metrics(tracking, monkeypatch):
    import time

    from neuroflow import cli

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    client = MlflowClient()
    with cli.step_run(system_metrics=True) as run:
        deadline = time.monotonic() + 30  # a loaded machine starts the sampler late
        while time.monotonic() < deadline and any(
            len(client.get_metric_history(run.info.run_id, f"system/{name}")) < 3
            for name in ("cpu_utilization_percentage", "system_memory_usage_megabytes")
        ):
            time.sleep(0.2)
    with cli.step_run() as quiet:
        time.sleep(0.5)
    for name in ("cpu_utilization_percentage", "system_memory_usage_megabytes"):
        history = MlflowClient().get_metric_history(run.info.run_id, f"system/{name}")
        assert len(history) >= 2 and max(m.value for m in history) > 0, name
    assert not any(k.startswith("system/") for k in mlflow.get_run(quiet.info.run_id).data.metrics)
