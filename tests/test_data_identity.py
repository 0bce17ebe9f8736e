"""Data identity, from preprocess to predict: each test replays a way a step was once silently
wrong about which data it held (the step cache, register, tune, promote, model names, predict,
resume and ties), and asserts the right outcome."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from neuroflow.jobs.preprocess import preprocess
from neuroflow.jobs.train_classifier import train_classifier
from neuroflow.settings import MLPConfig, PrepareConfig, TrainConfig

SMALL_MLP = MLPConfig(hidden=(16,))
QUICK = TrainConfig(epochs=3, batch_size=64, max_batches=2, device="cpu")


class Crash(Exception):
    pass


def prepare(dataset="digits", **overrides):
    with mlflow.start_run():
        return preprocess(PrepareConfig(dataset=dataset, **overrides))


def crash_in_epoch_2(model, epoch):  # after epoch 2's checkpoint is logged
    if epoch == 2:
        raise Crash


def test_resume_with_data_latest_resumes_only_a_run_on_the_data_latest_names_now(prepared):
    """A run on the IDX data crashed; then the digits became the latest data. resume=true with
    data=latest once resumed the IDX run and trained on the IDX images."""
    with pytest.raises(Crash), mlflow.start_run() as broken:
        train_classifier("mlp", SMALL_MLP, QUICK, "latest", watch=crash_in_epoch_2)
    assert MlflowClient().get_run(broken.info.run_id).info.status == "FAILED"
    digits = prepare("digits")

    with mlflow.start_run() as fresh:
        train_classifier("mlp", SMALL_MLP, QUICK, "latest", resume=True)
    fresh = mlflow.get_run(fresh.info.run_id)
    assert "resumed_from" not in fresh.data.tags
    assert fresh.data.params["data_run_id"] == digits.run_id

    with mlflow.start_run() as resumed:  # named by its run id, the IDX data is resumed
        train_classifier("mlp", SMALL_MLP, QUICK, prepared.run_id, resume=True)
    resumed = mlflow.get_run(resumed.info.run_id)
    assert resumed.data.tags["resumed_from"] == broken.info.run_id
    assert resumed.data.params["data_run_id"] == prepared.run_id
