"""train_dcgan's job in-process against a throwaway store: metrics, samples, model, evaluator."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from helpers import copy_of, synthetic_digits
from neuroflow.data.idx import write_idx
from neuroflow.errors import NeuroflowError, RunLookupError
from neuroflow.families import CNNConfig, DCGANConfig
from neuroflow.jobs.preprocess import preprocess
from neuroflow.jobs.register import register
from neuroflow.jobs.train_classifier import train_classifier
from neuroflow.jobs.train_dcgan import train_dcgan
from neuroflow.settings import GANTrainConfig, PrepareConfig, TrainConfig

SMALL = DCGANConfig(latent_dim=8, width=4)
FAST = GANTrainConfig(epochs=2, batch_size=32, max_batches=2, device="cpu")
ONE_BATCH = GANTrainConfig(epochs=1, max_batches=1, device="cpu")


@pytest.fixture(scope="module")
def evaluated_store(prepared_store, tmp_path_factory) -> SimpleNamespace:
    """Made once: prepared_store with a small CNN trained on it, the `evaluator` (its model
    URI) of the tests that give one. `evaluator` gives each test a copy."""
    root = tmp_path_factory.mktemp("evaluated")
    with copy_of(prepared_store.folder, root), mlflow.start_run():
        config = TrainConfig(epochs=1, device="cpu")
        model_uri = train_classifier(
            "cnn", CNNConfig(channels=(4, 8), hidden=16), config, prepared_store.ref.run_id
        )
    return SimpleNamespace(folder=root / "store", model_uri=model_uri)


@pytest.fixture
def evaluator(evaluated_store, prepared_store, tmp_path) -> str:
    """This test's own copy of evaluated_store, as its tracking store; the evaluator's URI. The
    `prepared` dataset is in it (prepared_store.ref)."""
    with copy_of(evaluated_store.folder, tmp_path):
        yield evaluated_store.model_uri


def run_dcgan(data: str, evaluator: str, config: GANTrainConfig = FAST):
    with mlflow.start_run() as run:
        model_uri = train_dcgan(SMALL, config, data, evaluator)
    return mlflow.get_run(run.info.run_id), model_uri


def test_dcgan_logs_losses_each_epoch_scores_every_score_every_and_the_generator(
    evaluator, prepared_store
):
    prepared = prepared_store.ref
    config = dataclasses.replace(FAST, epochs=3, score_every=2)
    run, model_uri = run_dcgan(prepared.run_id, evaluator, config)
    client, run_id = MlflowClient(), run.info.run_id
    assert run.data.tags["family"] == "dcgan" and run.data.tags["step"] == "train_dcgan"
    assert run.data.params["evaluator_uri"] == evaluator == run.data.tags["evaluator_uri"]
    for key in ("d_loss", "g_loss"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3], key
    for key in ("fid", "inception_score", "class_coverage", "class_entropy"):  # and the last
        assert [m.step for m in client.get_metric_history(run_id, key)] == [2, 3], key
    samples = {f.path for f in client.list_artifacts(run_id, "samples")}
    assert samples == {"samples/epoch_002.png", "samples/epoch_003.png", "samples/final.png"}
    assert {f.path for f in client.list_artifacts(run_id, "plots")} == {"plots/gan_curves.png"}
    generator = mlflow.pyfunc.load_model(model_uri)
    assert generator.metadata.get_input_schema().inputs[0].shape == (-1, 8)
    images = generator.predict(np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32))
    assert images.shape == (5, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255


def test_without_an_evaluator_a_quick_cnn_is_trained_and_recorded(prepared):
    run, _ = run_dcgan(prepared.run_id, "", ONE_BATCH)
    children = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'", output_format="list"
    )
    (quick,) = [c for c in children if c.data.tags.get("purpose") == "dcgan evaluator"]
    assert quick.data.tags["family"] == "cnn" and quick.info.status == "FINISHED"
    assert run.data.params["evaluator_uri"] == quick.data.tags["model_uri"]


def test_the_champion_evaluator_is_recorded_as_the_version_it_names(evaluator, prepared_store):
    prepared = prepared_store.ref
    client = MlflowClient()
    trained_by = mlflow.get_logged_model(evaluator.removeprefix("models:/")).source_run_id
    with mlflow.start_run():
        version = register(trained_by, "", "idx_cnn", "").version
    client.set_registered_model_alias("idx_cnn", "champion", version)
    run, _ = run_dcgan(prepared.run_id, "", ONE_BATCH)
    assert run.data.params["evaluator_uri"] == f"models:/idx_cnn/{version}"
    children = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'", output_format="list"
    )
    assert children == [], "a quick CNN was trained although a champion exists"
    run, _ = run_dcgan(prepared.run_id, "models:/idx_cnn@champion", ONE_BATCH)
    assert run.data.params["evaluator_uri"] == f"models:/idx_cnn/{version}"


def test_an_evaluator_that_does_not_exist_is_refused(prepared):
    with pytest.raises(RunLookupError, match="evaluator models:/nope@champion cannot be loaded"):
        run_dcgan(prepared.run_id, "models:/nope@champion")


def test_a_generator_is_not_an_evaluator(evaluator, prepared_store):
    prepared = prepared_store.ref
    _, generator_uri = run_dcgan(prepared.run_id, evaluator)
    with pytest.raises(RunLookupError, match="is a ImageGenerator; expected a classifier"):
        run_dcgan(prepared.run_id, generator_uri)


def test_images_the_gan_cannot_make_are_refused_before_training(tracking, tmp_path: Path):
    folder = tmp_path / "odd"
    folder.mkdir()
    images, labels = synthetic_digits(60, size=30)
    write_idx(folder / "train-images-idx3-ubyte", images)
    write_idx(folder / "train-labels-idx1-ubyte", labels)
    with mlflow.start_run():
        ref = preprocess(PrepareConfig(dataset="idx", data_dir=str(folder), image_size=30))
    with pytest.raises(NeuroflowError, match="cannot make 30x30 images"):
        run_dcgan(ref.run_id, "")


class Crash(Exception):
    pass


def test_a_broken_dcgan_run_resumes_to_the_curves_of_an_unbroken_one(prepared):
    """With no evaluator given, each run trains a quick CNN, except the resumed one: it keeps
    the broken run's, so its scores continue the same curves."""
    config = GANTrainConfig(epochs=4, score_every=2, batch_size=32, max_batches=2, device="cpu")
    whole, whole_uri = run_dcgan(prepared.run_id, "", config)

    def crash_in_epoch_3(model, epoch):  # after epoch 3 is logged, before its checkpoint
        if epoch == 3:
            raise Crash

    with pytest.raises(Crash), mlflow.start_run() as broken:
        train_dcgan(SMALL, config, prepared.run_id, "", watch=crash_in_epoch_3)
    client = MlflowClient()
    broken = client.get_run(broken.info.run_id)
    assert broken.info.status == "FAILED"

    with mlflow.start_run() as run:
        resumed_uri = train_dcgan(SMALL, config, prepared.run_id, "", resume=True)
    resumed = mlflow.get_run(run.info.run_id)
    assert resumed.data.tags["resumed_from"] == broken.info.run_id
    assert resumed.data.tags["resumed_at_epoch"] == "2"
    assert resumed.data.params["evaluator_uri"] == broken.data.params["evaluator_uri"]
    children = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'", output_format="list"
    )
    assert children == [], "the resumed run trained an evaluator of its own"
    for key in ("d_loss", "g_loss", "fid", "inception_score", "class_coverage", "class_entropy"):
        got = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        expected = [(m.step, m.value) for m in client.get_metric_history(whole.info.run_id, key)]
        assert sorted(got) == sorted(expected), key
    assert {f.path for f in client.list_artifacts(run.info.run_id, "plots")} == {
        "plots/gan_curves.png"
    }
    latents = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_array_equal(
        mlflow.pyfunc.load_model(resumed_uri).predict(latents),
        mlflow.pyfunc.load_model(whole_uri).predict(latents),
    )


def test_the_dcgans_scores_are_on_its_logged_model_with_the_test_split(evaluator, prepared_store):
    run, model_uri = run_dcgan(prepared_store.ref.run_id, evaluator)
    (model,) = mlflow.search_logged_models(
        filter_string=f"source_run_id = '{run.info.run_id}'", output_format="list"
    )
    assert model_uri == f"models:/{model.model_id}"
    on_model = {m.key: m for m in model.metrics}
    assert set(on_model) == {"fid", "inception_score", "class_coverage", "class_entropy"}
    for key, metric in on_model.items():
        assert metric.value == run.data.metrics[key] and metric.step == 2, key
        assert metric.dataset_name == "idx-test", key
    best = mlflow.search_logged_models(
        filter_string="metrics.fid < 1e9", order_by=[{"field_name": "metrics.fid"}]
    )
    assert len(best) == 1
