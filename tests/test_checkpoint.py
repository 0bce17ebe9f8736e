"""Checkpoints: stopping after any epoch and resuming gives the numbers of a run never stopped,
and a file that is not a checkpoint is refused with one line."""

from __future__ import annotations

import dataclasses
import pickle
import random

import numpy as np
import pytest
import torch

from helpers import synthetic_digits
from neuroflow.errors import DataError
from neuroflow.families import CNNConfig, DCGANConfig
from neuroflow.models.build import build_classifier
from neuroflow.models.dcgan import Discriminator, Generator
from neuroflow.settings import GANTrainConfig, TrainConfig
from neuroflow.training import checkpoint
from neuroflow.training.batches import to_device
from neuroflow.training.checkpoint import Checkpoints
from neuroflow.training.classifier import fit
from neuroflow.training.device import seed_everything
from neuroflow.training.gan import fit_gan

CONFIG = TrainConfig(epochs=4, batch_size=32, device="cpu", patience=0)


@pytest.fixture(scope="module")
def digits():
    return to_device(*synthetic_digits(300, seed=0), "cpu"), to_device(
        *synthetic_digits(80, seed=1), "cpu"
    )


def new_model():
    seed_everything(CONFIG.seed)
    return build_classifier(
        "cnn", CNNConfig(channels=(8, 16), hidden=32), (28, 28), 0.1, 0.3, range(10)
    )


class Crash(Exception):
    pass


def train(digits, start=None, stop_after: int = 0, folder=None):
    """fit() with checkpoints saved to `folder`; raises Crash after epoch `stop_after`."""
    saved: list[int] = []

    def save(state):
        checkpoint.save(state, folder / "last.pt")
        saved.append(state["epoch"])
        if state["epoch"] == stop_after:
            raise Crash

    model = new_model()
    result = fit(model, *digits, CONFIG, checkpoints=Checkpoints(start, save))
    return model, result, saved


@pytest.mark.parametrize("stop_after", [1, 2, 3])
def test_resumed_training_equals_training_never_stopped(digits, tmp_path, stop_after):
    whole, whole_result, _ = train(digits, folder=tmp_path)
    with pytest.raises(Crash):
        train(digits, stop_after=stop_after, folder=tmp_path)
    random.seed(123), np.random.seed(123), torch.manual_seed(123)  # a fresh process differs
    state = checkpoint.load(tmp_path / "last.pt", "last.pt")
    assert state["epoch"] == stop_after
    resumed, result, saved = train(digits, start=state, folder=tmp_path)
    assert saved == list(range(stop_after + 1, CONFIG.epochs + 1))
    assert result.history == whole_result.history
    assert result.best_epoch == whole_result.best_epoch
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


@pytest.mark.parametrize("stop", [(0, 6), (1, 3)])  # (epochs done, batches of the next)
def test_a_run_stopped_within_an_epoch_resumes_there_to_the_same_numbers(digits, tmp_path, stop):
    """checkpoint_every=3: a checkpoint every 3 batches within each epoch (of 10 batches:
    300 images in batches of 32). Resuming from one goes on from that batch, augmentation
    and dropout included, to the curves and weights of a run never stopped."""
    config = dataclasses.replace(CONFIG, checkpoint_every=3, augment="true", epochs=2)
    saved: list[tuple[int, int]] = []
    armed = [False]

    def save(state):
        checkpoint.save(state, tmp_path / "last.pt")
        position = state.get("position")
        saved.append((state["epoch"], position["batch"] if position else 0))
        if armed[0] and saved[-1] == stop:
            raise Crash

    def run(start=None):
        model = new_model()
        result = fit(model, *digits, config, checkpoints=Checkpoints(start, save))
        return model, result

    whole, whole_result = run()
    assert saved == [(0, 3), (0, 6), (0, 9), (1, 0), (1, 3), (1, 6), (1, 9), (2, 0)]
    saved.clear()
    armed[0] = True
    with pytest.raises(Crash):
        run()
    armed[0] = False
    random.seed(1), np.random.seed(1), torch.manual_seed(1)  # a fresh process differs
    state = checkpoint.load(tmp_path / "last.pt", "last.pt")
    assert (state["epoch"], state["position"]["batch"]) == stop
    resumed, result = run(start=state)
    assert result.history == whole_result.history
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_a_checkpoint_loads_with_weights_only_and_holds_every_generator(digits, tmp_path):
    with pytest.raises(Crash):
        train(digits, stop_after=1, folder=tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"format", "trainer", *checkpoint.KEYS["classifier"]} <= state.keys()
    assert {"torch", "shuffle", "numpy", "python"} <= state["rng"].keys()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "cannot be read"),
        (b"not a checkpoint at all", "cannot be read"),
        (pickle.dumps(print), "cannot be read"),  # code, refused by weights_only
    ],
    ids=["empty", "text", "pickled code"],
)
def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, content, message):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        checkpoint.load(path, "runs:/x/checkpoints/last.pt")
    assert "runs:/x/checkpoints/last.pt" in str(error.value)
    assert "\n" not in str(error.value)


def test_a_truncated_or_foreign_torch_file_is_refused(digits, tmp_path):
    with pytest.raises(Crash):
        train(digits, stop_after=1, folder=tmp_path)
    path = tmp_path / "last.pt"
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(DataError, match="cannot be read"):
        checkpoint.load(path, "last.pt")
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(DataError, match="lacks"):
        checkpoint.load(path, "last.pt")


@pytest.mark.parametrize("loss", ["bce", "wgan-gp"])
def test_a_resumed_gan_equals_a_gan_never_stopped(tmp_path, loss):
    """Both networks, both optimisers and the shuffling order come back from the checkpoint."""
    config = GANTrainConfig(loss=loss, epochs=3, batch_size=16, n_critic=2, device="cpu")
    images = to_device(*synthetic_digits(64, seed=2), "cpu")
    small = DCGANConfig(latent_dim=8, width=4)

    def train(start=None, stop_after: int = 0):
        def save(state):
            checkpoint.save(state, tmp_path / "last.pt")
            if state["epoch"] == stop_after:
                raise Crash

        seed_everything(config.seed)
        generator, critic = Generator(small, (28, 28)), Discriminator(small, (28, 28))
        history = fit_gan(
            generator, critic, images, config, 8, None, None, Checkpoints(start, save)
        )
        return generator, critic, history

    generator, critic, history = train()
    with pytest.raises(Crash):
        train(stop_after=1)
    torch.manual_seed(123)  # a fresh process differs
    state = checkpoint.load(tmp_path / "last.pt", "last.pt")
    assert state["trainer"] == "gan" and state["epoch"] == 1
    resumed_generator, resumed_critic, resumed_history = train(start=state)
    assert resumed_history == history
    for whole, resumed in ((generator, resumed_generator), (critic, resumed_critic)):
        for key, value in whole.state_dict().items():
            assert torch.equal(resumed.state_dict()[key], value), key


def test_a_checkpoint_of_another_format_or_trainer_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    refused = {
        "has format 4; expected format 3": {"format": 4, "epoch": 1},
        # 1 and 2 held torch.optim's state, which the optimisers of optim.py do not read
        "has format 2; expected format 3": {"format": 2, "trainer": "classifier"},
        "has format 1; expected format 3": {"format": 1, "epoch": 1},
        "has format tensor": {"format": torch.zeros(3), "trainer": "gan"},
        "trainer 'forest'; expected one of": {"format": 3, "trainer": "forest"},
        r"trainer \['gan'\]; expected one of": {"format": 3, "trainer": ["gan"]},
        r"lacks \['generator', 'critic'": {"format": 3, "trainer": "gan", "epoch": 1},
        r"lacks \['model', 'optimizer'": {"format": 3, "trainer": "classifier", "epoch": 1},
    }
    for message, state in refused.items():
        torch.save(state, path)
        with pytest.raises(DataError, match=message):
            checkpoint.load(path, "last.pt")


def test_a_failed_upload_does_not_hide_the_training_error(tracking, monkeypatch, capsys):
    import mlflow

    from neuroflow.errors import TrainingError
    from neuroflow.tracking.checkpoints import Uploader

    def refuse(self, path):
        raise OSError("disk full")

    monkeypatch.setattr(Uploader, "_upload", refuse)
    with (
        mlflow.start_run(),
        pytest.raises(TrainingError, match="diverged"),
        Uploader() as uploader,
    ):
        uploader.save({"trainer": "gan", "epoch": 1})
        raise TrainingError("diverged")
    assert "checkpoint upload failed too: disk full" in capsys.readouterr().err
    # with training fine, the upload's error is raised
    with mlflow.start_run(), pytest.raises(OSError, match="disk full"), Uploader() as uploader:
        uploader.save({"trainer": "gan", "epoch": 1})


def test_the_checkpoint_is_written_off_the_training_thread_from_a_copy(
    tracking, monkeypatch, tmp_path
):
    import threading

    import mlflow

    from neuroflow.tracking.checkpoints import Uploader

    weights = torch.ones(3)
    gate, writers = threading.Event(), []
    write = Uploader._write

    def held_write(self, state, path):
        gate.wait(10)  # until training has moved the weights on
        writers.append(threading.current_thread().name)
        write(self, state, path)

    monkeypatch.setattr(Uploader, "_write", held_write)
    with mlflow.start_run() as run, Uploader() as uploader:
        uploader.save({"trainer": "classifier", "epoch": 1, "model": {"w": weights}})
        weights += 1  # the next epoch changes the weights in place
        gate.set()
    uri = f"runs:/{run.info.run_id}/checkpoints/last.pt"
    saved = torch.load(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path)))
    assert torch.equal(saved["model"]["w"], torch.ones(3))
    assert writers and writers[0].startswith("checkpoint")
