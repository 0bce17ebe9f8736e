"""Every family's registered model loads with pickle and cloudpickle unable to load anything,
and predicts what the trained network does: the format runs no code it carries besides ours."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import cloudpickle
import mlflow
import numpy as np
import pytest
import torch

from helpers import copy_of
from neuroflow.jobs.register import register
from neuroflow.jobs.train_classifier import train_classifier
from neuroflow.jobs.train_dcgan import train_dcgan
from neuroflow.settings import (
    CNNConfig,
    DCGANConfig,
    GANTrainConfig,
    MLPConfig,
    RNNConfig,
    TrainConfig,
)
from neuroflow.tracking.models import load_model

CLASSIFIERS = {
    "mlp": MLPConfig(hidden=(32,)),
    "cnn": CNNConfig(channels=(4, 8), hidden=16),
    "rnn": RNNConfig(cell="lstm", hidden_size=16),
}
FAST = TrainConfig(epochs=2, batch_size=64, max_batches=3, device="cpu")


@pytest.fixture(scope="module")
def registered(prepared_store, tmp_path_factory) -> SimpleNamespace:
    """Made once: each family trained on prepared_store and registered as idx_<family> v1, with
    the trained network itself kept (`networks`)."""
    root = tmp_path_factory.mktemp("safe")
    networks = {}

    def keep(family):
        return lambda network, epoch: networks.setdefault(family, network)

    with copy_of(prepared_store.folder, root):
        data = prepared_store.ref.run_id
        for family, config in CLASSIFIERS.items():
            with mlflow.start_run() as run:
                train_classifier(family, config, FAST, data, watch=keep(family))
            with mlflow.start_run():
                register(run.info.run_id, "", "", "")
        gan = GANTrainConfig(epochs=1, batch_size=32, max_batches=2, device="cpu")
        with mlflow.start_run() as run:  # its evaluator: a quick CNN, trained in a nested run
            train_dcgan(DCGANConfig(latent_dim=8, width=4), gan, data, "", watch=keep("dcgan"))
        with mlflow.start_run():
            register(run.info.run_id, "", "", "")
    return SimpleNamespace(folder=root / "store", networks=networks)


@pytest.fixture
def unpickling_refused(registered, tmp_path, monkeypatch):
    """registered's store, with every way pickle and cloudpickle load an object refused."""

    class Refused:
        def __init__(self, *args, **kwargs):
            raise AssertionError("something tried to unpickle")

    def refuse(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    with copy_of(registered.folder, tmp_path):
        for module in (pickle, cloudpickle):
            monkeypatch.setattr(module, "load", refuse)
            monkeypatch.setattr(module, "loads", refuse)
        monkeypatch.setattr(pickle, "Unpickler", Refused)
        monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        yield registered


def inputs(family: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if family == "dcgan":
        return rng.standard_normal((7, 8)).astype(np.float32)  # latents
    return rng.integers(0, 256, (7, 28, 28)).astype(np.float32)  # raw pixels


@pytest.mark.parametrize("family", [*CLASSIFIERS, "dcgan"])
def test_registered_models_load_without_unpickling_and_predict_as_trained(
    unpickling_refused, family
):
    with pytest.raises(AssertionError, match="unpickle"):
        pickle.loads(pickle.dumps(1))  # the refusal is in place
    uri = f"models:/idx_{family}/1"
    x = inputs(family)
    with torch.inference_mode():
        expected = unpickling_refused.networks[family].cpu().eval()(torch.from_numpy(x)).numpy()
    served = mlflow.pyfunc.load_model(uri)
    for batch in (x, x[:1], np.concatenate([x, x])):  # any batch size
        assert served.predict(batch).shape[0] == len(batch)
    assert served.predict(x).dtype == expected.dtype
    np.testing.assert_allclose(served.predict(x), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        load_model(uri)(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-5, atol=1e-4
    )
    assert served.metadata.signature is not None
    assert served.metadata.saved_input_example_info["type"] == "ndarray"


def test_loading_a_model_leaves_the_callers_random_stream_as_it_was(registered, tmp_path):
    with copy_of(registered.folder, tmp_path):
        torch.manual_seed(0)
        load_model("models:/idx_cnn/1")
        after_load = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after_load, torch.rand(3))
