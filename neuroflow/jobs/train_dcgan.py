"""The job of train_dcgan: a DCGAN trained and judged by FID, inception score and class
coverage under a fixed classifier, the evaluator."""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from neuroflow.data.prepared import Prepared, open_for
from neuroflow.errors import NeuroflowError, RunLookupError, TrainingError
from neuroflow.families import CNNConfig, DCGANConfig
from neuroflow.jobs.preprocess import preprocess_nested
from neuroflow.jobs.train_classifier import Watch, train_classifier
from neuroflow.models.build import build_gan
from neuroflow.models.classifier import ImageClassifier
from neuroflow.models.dcgan import ImageGenerator, check_image_shape
from neuroflow.settings import GANTrainConfig, TrainConfig
from neuroflow.tracking import plots
from neuroflow.tracking.checkpoints import Resume, Uploader, find_start
from neuroflow.tracking.lineage import log_splits, provenance_tags
from neuroflow.tracking.models import load_model, log_generator, unloadable
from neuroflow.tracking.registry import CHAMPION, default_model_name
from neuroflow.tracking.runs import (
    FAMILY_TAG,
    STEP_TAG,
    DataRef,
    experiment_id,
    log_params_once,
    params_of,
    resolve_data,
)
from neuroflow.training.batches import splits_of
from neuroflow.training.checkpoint import Checkpoints
from neuroflow.training.device import seed_everything
from neuroflow.training.distributed import Ranks
from neuroflow.training.gan import fit_gan
from neuroflow.training.sample_quality import SAMPLES, judge, sample, score

EVALUATOR = ("evaluator", "the URI of a logged classifier")  # how an unloadable one is named
GRID = 64  # images in each sample grid, from the same latent vectors every epoch
EVALUATOR_EPOCHS = 5  # for the quick CNN trained when no registered one exists


def train_dcgan(
    model_config: DCGANConfig,
    config: GANTrainConfig,
    data: str,
    evaluator: str,
    watch: Watch | None = None,
    resume_from: str = "",
    resume: bool = False,
):
    """In the active run: train a DCGAN on the prepared dataset `data` names, score it every
    `score_every` epochs and after the last with the evaluator classifier, and log samples/,
    plots/ and `model`. Returns the
    logged generator's URI. Under torchrun every rank trains; rank 0 alone scores, talks to
    MLflow and returns the URI, the others return None. `watch(generator, epoch)` is called on
    rank 0 after each epoch has been logged. Every epoch logs checkpoints/last.pt,
    and `resume_from` (a run id) or `resume` (the newest FAILED or KILLED run with these
    parameters) go on from one (see neuroflow.tracking.checkpoints): the resumed run keeps the
    old run's data and evaluator, so its scores continue the same curves."""
    ranks = Ranks.setup(config.device)
    if ranks.main:
        mlflow.set_tags({STEP_TAG: "train_dcgan", FAMILY_TAG: "dcgan", **provenance_tags()})
        params = params_of(model_config, config, nproc=ranks.size, data=data, evaluator=evaluator)
        log_params_once(params)
    start = ranks.from_main(lambda: find_start(Resume(resume_from, resume), "train_dcgan", params))
    if start:
        data, evaluator = start.params["data_uri"], start.params["evaluator_uri"]
    ref = ranks.from_main(lambda: resolve_data(data, experiment_id()) or preprocess_nested())
    prepared = open_for(ref.uri, config)  # whole, or a shard at a time: see loading
    try:
        check_image_shape(prepared.image_shape)
    except ValueError as error:
        raise NeuroflowError(f"data {ref.uri}: {error}") from None

    seed_everything(config.seed)
    generator, critic = build_gan(
        model_config, prepared.image_shape, config.loss, prepared.channels
    )
    generator, critic = generator.to(ranks.device), critic.to(ranks.device)
    served = ImageGenerator(generator, asdict(model_config))
    train = splits_of(prepared, ranks.device, config.shuffle_mb, ["train"])["train"]
    fit_args = (generator, critic, train, config, model_config.latent_dim)
    state = start.state if start else None
    if not ranks.main:
        fit_gan(*fit_args, None, ranks, Checkpoints(state))
        return None

    digest = prepared.digest
    mlflow.log_params({"data_uri": ref.uri, "data_run_id": ref.run_id, "data_digest": digest})
    test_dataset = log_splits(prepared, ref.uri)["test"]
    judge_model, evaluator_uri = load_evaluator(evaluator, prepared, ref, config)
    mlflow.log_param("evaluator_uri", evaluator_uri)
    mlflow.set_tag("evaluator_uri", evaluator_uri)
    judge_model = judge_model.to(ranks.device)
    real = judge(judge_model, splits_of(prepared, ranks.device, 0, ["test"])["test"].images)
    latents = torch.Generator().manual_seed(config.seed)
    grid_z = torch.randn(GRID, model_config.latent_dim, generator=latents).to(ranks.device)
    eval_z = torch.randn(SAMPLES, model_config.latent_dim, generator=latents).to(ranks.device)
    curves: list[dict[str, float]] = list(start.curves) if start else []

    def on_epoch(losses: dict[str, float], epoch: int) -> None:
        scores = {}
        if epoch % config.score_every == 0 or epoch == config.epochs:
            scores = score(sample(served, eval_z), judge_model, real)
            plots.log_grid(sample(served, grid_z), f"samples/epoch_{epoch:03d}.png")
        # the last epoch's scores are logged with the model, once it is (below)
        mlflow.log_metrics(losses if epoch == config.epochs else {**losses, **scores}, step=epoch)
        curves.append({**losses, **scores})
        if watch:
            watch(served, epoch)

    try:
        with Uploader() as uploader:
            fit_gan(*fit_args, on_epoch, ranks, Checkpoints(state, uploader.save))
    except TrainingError:  # the last good epoch's weights are in checkpoints/last.pt
        mlflow.set_tag("last_good_epoch", str(len(curves)))
        raise
    plots.log_grid(sample(served, grid_z), "samples/final.png")
    plots.log_gan_curves(curves)
    info = log_generator(served.cpu().eval(), model_config.latent_dim)
    final = {key: value for key, value in curves[-1].items() if key not in ("d_loss", "g_loss")}
    # on the run and on the model, judged against the test split
    mlflow.log_metrics(final, step=len(curves), model_id=info.model_id, dataset=test_dataset)
    mlflow.set_tag("model_uri", info.model_uri)
    return info.model_uri


def load_evaluator(value: str, prepared: Prepared, ref: DataRef, config: GANTrainConfig):
    """(classifier, its model URI). `value` names one; empty means the registered CNN champion
    for this dataset, or else a quick CNN trained now in a nested run. An alias is pinned to the
    version it names now, so the URI recorded keeps naming the classifier that scored the run
    (a resumed run, and promote, score with it again)."""
    if value:
        return _loaded(pinned(value), prepared)
    champion = f"models:/{default_model_name(prepared.title, 'cnn')}@{CHAMPION}"
    try:
        uri = pinned(champion)
    except RunLookupError:  # none yet
        uri = ""
    if uri:
        model = load_model(uri, *EVALUATOR)  # one whose files changed is refused, not passed over
        with contextlib.suppress(RunLookupError):  # one for other images
            return _checked(model, uri, prepared), uri
    with mlflow.start_run(nested=True, run_name="evaluator"):
        mlflow.set_tag("purpose", "dcgan evaluator")
        quick = TrainConfig(epochs=EVALUATOR_EPOCHS, seed=config.seed, device=config.device)
        alone = Ranks.single(config.device)  # rank 0 trains it while the others wait
        value = train_classifier("cnn", CNNConfig(), quick, ref.run_id, alone)
    return _loaded(value, prepared)


def _loaded(uri: str, prepared: Prepared) -> tuple[ImageClassifier, str]:
    return _checked(load_model(uri, *EVALUATOR), uri, prepared), uri


def pinned(uri: str) -> str:
    """models:/<name>@<alias> as models:/<name>/<version>, the version the alias names now;
    any other URI as it is."""
    match = re.fullmatch(r"models:/([^/@]+)@([^/]+)", uri)
    if not match:
        return uri
    name, alias = match.groups()
    try:
        version = MlflowClient().get_model_version_by_alias(name, alias).version
    except MlflowException as error:
        raise unloadable(uri, error, *EVALUATOR) from None
    return f"models:/{name}/{version}"


def _checked(model, uri: str, prepared: Prepared) -> ImageClassifier:
    if not isinstance(model, ImageClassifier):
        raise RunLookupError(f"evaluator {uri} is a {type(model).__name__}; expected a classifier")
    shape, classes = model.standardize.pixel_shape, len(model.classes)
    if shape != prepared.pixel_shape or classes != len(prepared.classes):
        raise RunLookupError(
            f"evaluator {uri} takes {shape} images of {classes} classes; the data has "
            f"{prepared.pixel_shape} images of {len(prepared.classes)} classes"
        )
    if (model.dataset, model.classes) != (prepared.title, prepared.classes):
        trained_on = (
            f"dataset {model.dataset!r}" if model.dataset else "a dataset it does not record"
        )
        raise RunLookupError(
            f"evaluator {uri} was trained on {trained_on}; the data is dataset "
            f"{prepared.title!r}: expected a classifier trained on the same dataset and classes"
        )
    return model
