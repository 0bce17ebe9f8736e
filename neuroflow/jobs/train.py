"""train_mlp, train_cnn, train_rnn: one classifier trained, evaluated and logged."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

import mlflow

from neuroflow.data.prepared import load_prepared
from neuroflow.jobs.preprocess import preprocess_nested
from neuroflow.models.families import build_classifier
from neuroflow.tracking import artifacts
from neuroflow.tracking.lineage import log_splits, provenance_tags
from neuroflow.tracking.runs import FAMILY_TAG, STEP_TAG, download, log_params_once, resolve_data
from neuroflow.training.classifier import evaluate, fit, to_device
from neuroflow.training.config import TrainConfig, resolve_device, seed_everything


def param_string(value) -> str:
    """How a param is logged: tuples as '100,50', like the option that set them."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def train_classifier(family: str, model_config, config: TrainConfig, data: str) -> str:
    """In the active run: train `family` on the prepared dataset `data` names (see
    neuroflow.tracking.runs.resolve_data) and log metrics, plots/ and `model`. Returns the
    logged model's URI."""
    run = mlflow.active_run()
    mlflow.set_tags({STEP_TAG: f"train_{family}", FAMILY_TAG: family, **provenance_tags()})
    options = {**asdict(model_config), **asdict(config), "data": data}
    log_params_once({key: param_string(value) for key, value in options.items()})
    device = resolve_device(config.device)

    ref = resolve_data(data, run.info.experiment_id) or preprocess_nested()
    with tempfile.TemporaryDirectory() as tmp:
        prepared = load_prepared(Path(download(ref.uri, tmp)))  # read whole into memory
    mlflow.log_params(
        {"data_uri": ref.uri, "data_run_id": ref.run_id, "data_digest": prepared.digest}
    )
    log_splits(prepared, ref.uri)

    seed_everything(config.seed)
    model = build_classifier(
        family, model_config, prepared.image_shape, prepared.mean, prepared.std, prepared.classes
    ).to(device)
    splits = {s: to_device(prepared.images[s], prepared.labels[s], device) for s in prepared.images}
    result = fit(
        model,
        splits["train"],
        splits["val"],
        config,
        on_epoch=lambda metrics, epoch: mlflow.log_metrics(metrics, step=epoch),
    )
    test = evaluate(model, *splits["test"])
    mlflow.log_metrics(
        {"test_accuracy": test.accuracy, "test_loss": test.loss, "best_epoch": result.best_epoch}
    )
    artifacts.log_loss_curves(result.history)
    matrix = artifacts.confusion_matrix(
        prepared.labels["test"], test.predictions, len(prepared.classes)
    )
    artifacts.log_confusion_matrix(matrix, prepared.classes)
    info = artifacts.log_classifier(model, prepared.images["test"][:4])
    mlflow.set_tag("model_uri", info.model_uri)
    return info.model_uri
