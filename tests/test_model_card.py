"""model_card.html: made for every registered version, linked from its description, whole in
one file, and rendered by a real browser with no errors and no request leaving the page."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from mlflow import MlflowClient

from browser import ARTIFACTS, visit
from helpers import copy_of
from neuroflow.families import CNNConfig
from neuroflow.jobs.register import register
from neuroflow.jobs.train_classifier import train_classifier
from neuroflow.settings import TrainConfig
from neuroflow.tracking.card import CARD

SMALL = CNNConfig(channels=(4, 8), hidden=16)


@pytest.fixture(scope="module")
def registered_store(prepared_store, tmp_path_factory) -> SimpleNamespace:
    """Made once: prepared_store with a small CNN trained and registered as idx_cnn v1."""
    root = tmp_path_factory.mktemp("carded")
    with copy_of(prepared_store.folder, root):
        with mlflow.start_run() as training:
            train_classifier("cnn", SMALL, TrainConfig(epochs=2, device="cpu"), "latest")
        with mlflow.start_run() as registering:
            version = register(training.info.run_id, "", "", "")
        card = f"runs:/{registering.info.run_id}/{CARD}"
        page = root / CARD
        page.write_bytes(Path(mlflow.artifacts.download_artifacts(card)).read_bytes())
    return SimpleNamespace(
        folder=root / "store",
        training=training.info.run_id,
        register=registering.info.run_id,
        version=version,
        page=page,
    )


@pytest.fixture
def registered(registered_store, tmp_path) -> SimpleNamespace:
    with copy_of(registered_store.folder, tmp_path):
        yield registered_store


def test_each_version_links_to_its_card(registered):
    version = MlflowClient().get_model_version("idx_cnn", "1")
    uri = f"runs:/{registered.register}/{CARD}"
    assert version.tags["model_card"] == uri
    assert uri in version.description
    assert f"/runs/{registered.register}/artifactPath/{CARD}" in version.description


def test_the_card_shows_lineage_metrics_curves_and_mistakes(registered):
    page = registered.page.read_text()
    run = mlflow.get_run(registered.training)
    data_run = run.data.params["data_run_id"]
    for expected in (
        registered.training,
        data_run,
        run.data.params["data_digest"],
        run.data.tags["code_digest"],
        "idx_cnn <small>version 1</small>",
        "test_accuracy",
        "Loss curves",
        "Confusion matrix on the test split",
        "Per-class accuracy",
        "misclassified test images",
    ):
        assert expected in page, expected
    assert page.count("<figure>") == min(16, round(100 * (1 - run.data.metrics["test_accuracy"])))
    assert "http://" not in page and "https://" not in page  # everything is inlined


@pytest.mark.slow
def test_the_card_renders_in_a_browser_without_errors_or_requests(registered_store):
    screenshot = ARTIFACTS / "model_card.png"
    seen = visit(registered_store.page, screenshot)
    assert seen.console_errors == [] and seen.page_errors == []
    assert seen.requests == []
    assert "Per-class accuracy" in seen.text and "Lineage" in seen.text
    assert screenshot.stat().st_size > 20_000  # the plots drew


def test_a_dcgan_card_shows_its_samples_and_score_curves(prepared):
    from neuroflow.families import DCGANConfig
    from neuroflow.jobs.train_dcgan import train_dcgan
    from neuroflow.settings import GANTrainConfig

    config = GANTrainConfig(epochs=2, batch_size=32, max_batches=2, device="cpu")
    with mlflow.start_run() as training:
        train_dcgan(DCGANConfig(latent_dim=8, width=4), config, prepared.run_id, "")
    with mlflow.start_run() as registering:
        register(training.info.run_id, "", "", "")
    page = mlflow.artifacts.load_text(f"runs:/{registering.info.run_id}/{CARD}")
    for expected in ("Samples from fixed latents", "Losses, FID and class coverage", "fid"):
        assert expected in page, expected
    assert "misclassified" not in page and "Per-class accuracy" not in page
    assert page.count("data:image/png;base64,") == 2
