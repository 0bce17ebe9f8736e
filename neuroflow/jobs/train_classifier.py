"""The job of train_mlp, train_cnn and train_rnn: one classifier trained, evaluated and logged."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace

import mlflow
import torch

from neuroflow.data.prepared import open_for
from neuroflow.errors import TrainingError
from neuroflow.jobs.preprocess import preprocess_nested
from neuroflow.models.build import build_classifier, for_data
from neuroflow.settings import TrainConfig
from neuroflow.tracking import plots
from neuroflow.tracking.checkpoints import Resume, Uploader, find_start
from neuroflow.tracking.evaluation import log_test_results
from neuroflow.tracking.lineage import log_splits, provenance_tags
from neuroflow.tracking.models import log_classifier
from neuroflow.tracking.runs import (
    FAMILY_TAG,
    STEP_TAG,
    experiment_id,
    log_params_once,
    params_of,
    resolve_data,
)
from neuroflow.training.batches import splits_of
from neuroflow.training.checkpoint import Checkpoints
from neuroflow.training.classifier import evaluate, fit
from neuroflow.training.device import seed_everything
from neuroflow.training.distributed import Ranks

Watch = Callable[[torch.nn.Module, int], None]  # (model, epoch) -> None


def log_metrics(metrics: dict[str, float], epoch: int) -> None:
    mlflow.log_metrics(metrics, step=epoch)  # one batched call per epoch


def train_classifier(
    family: str,
    model_config,
    config: TrainConfig,
    data: str,
    ranks: Ranks | None = None,
    watch: Watch | None = None,
    resume_from: str = "",
    resume: bool = False,
) -> str | None:
    """In the active run: train `family` on the prepared dataset `data` names (see
    neuroflow.tracking.runs.resolve_data) and log metrics, plots/ and `model`. Returns the
    logged model's URI. Under torchrun every rank calls this; rank 0 alone talks to MLflow and
    returns the URI, the others return None. `watch(model, epoch)` is called on rank 0 with
    epoch 0 once the model and data are ready, then after each epoch has been logged (the
    benchmarks time training with it). Every epoch logs checkpoints/last.pt; `resume_from` (a
    run id) or `resume` (the newest FAILED or KILLED run with these parameters) go on from one
    (see neuroflow.tracking.checkpoints)."""
    ranks = ranks or Ranks.setup(config.device)
    if ranks.main:
        mlflow.set_tags({STEP_TAG: f"train_{family}", FAMILY_TAG: family, **provenance_tags()})
        params = params_of(model_config, config, data=data, nproc=ranks.size)
        log_params_once(params)
    start = ranks.from_main(
        lambda: find_start(Resume(resume_from, resume), f"train_{family}", params)
    )
    ref = ranks.from_main(
        lambda: (
            resolve_data(start.params["data_uri"] if start else data, experiment_id())
            or preprocess_nested()
        )
    )
    prepared = open_for(ref.uri, config)  # whole, or a shard at a time: see loading
    if ranks.main:
        digest = prepared.digest
        mlflow.log_params({"data_uri": ref.uri, "data_run_id": ref.run_id, "data_digest": digest})
        datasets = log_splits(prepared, ref.uri)

    if config.augment == "auto":  # the digits only: see TrainConfig.augment
        config = replace(config, augment=str(prepared.meta["dataset"] == "digits").lower())
    if ranks.main:
        mlflow.log_param("augmented", config.augment)

    seed_everything(config.seed)
    model = build_classifier(family, model_config, **for_data(prepared)).to(ranks.device)
    splits = splits_of(prepared, ranks.device, config.shuffle_mb)

    logged = [start.state["epoch"] if start else 0]

    def log_epoch(metrics: dict[str, float], epoch: int) -> None:
        log_metrics(metrics, epoch)
        logged[0] = epoch
        if watch:
            watch(model, epoch)

    if watch and ranks.main:
        watch(model, 0)
    state = start.state if start else None
    try:
        # rank 0 alone logs checkpoints
        with Uploader() if ranks.main else contextlib.nullcontext() as uploader:
            result = fit(
                model,
                splits["train"],
                splits["val"],
                config,
                log_epoch if ranks.main else None,
                ranks,
                Checkpoints(state, uploader and uploader.save),
            )
    except TrainingError:
        if ranks.main:  # its weights are in checkpoints/last.pt
            mlflow.set_tag("last_good_epoch", str(logged[0]))
        raise
    if not ranks.main:
        return None
    mlflow.log_metrics({"best_epoch": result.best_epoch, "train_images_per_s": result.images_per_s})
    plots.log_loss_curves(result.history)
    test = evaluate(model, splits["test"].images, splits["test"].labels)
    info = log_classifier(model, prepared.images["test"][:4])
    log_test_results(info, prepared, test, datasets["test"])
    mlflow.set_tag("model_uri", info.model_uri)
    return info.model_uri
