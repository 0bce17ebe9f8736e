"""Every family's registered model loads with pickle and cloudpickle unable to load anything,
and predicts what the trained network does: the format runs no code it carries besides ours."""

from __future__ import annotations

import pickle
import subprocess
from pathlib import Path
from types import SimpleNamespace

import cloudpickle
import mlflow
import numpy as np
import pytest
import torch

from helpers import copy_of
from neuroflow.families import CNNConfig, DCGANConfig, MLPConfig, RNNConfig
from neuroflow.jobs.register import register
from neuroflow.jobs.train_classifier import train_classifier
from neuroflow.jobs.train_dcgan import train_dcgan
from neuroflow.settings import GANTrainConfig, TrainConfig
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


# --- models no one can swap ----------------------------------------------------------------
# Every file of a model is digested when training logs it and when register registers it, and
# every load path checks the files it downloaded before it imports the model's code.

MARKER = "imported.txt"  # what a swapped model_code.py writes, if anything ever imports it


def model_folder(name: str, version: str = "1") -> Path:
    """Where the store keeps the files of version `version` of `name`."""
    client = mlflow.MlflowClient()
    model_id = client.get_model_version(name, version).source.removeprefix("models:/")
    return Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))


def swap(name: str, path: str, store: Path) -> None:
    """Change one file of version 1 of `name` in the store, as someone with write access to the
    artifacts could: model_code.py for code that leaves a mark when imported, weights.pt for
    well-formed weights of the same network set to zero."""
    target = model_folder(name) / path
    if path == "model_code.py":
        target.write_text(
            f"from pathlib import Path\nPath({str(store / MARKER)!r}).write_text('ran')\n"
            + target.read_text()
        )
    else:
        weights = torch.load(target, weights_only=True)
        torch.save({key: torch.zeros_like(value) for key, value in weights.items()}, target)


@pytest.fixture
def swappable(registered, tmp_path):
    """registered's store as this test's store (a Store to run steps in), idx_cnn v1 champion."""
    from helpers import Store

    with copy_of(registered.folder, tmp_path) as uri:
        mlflow.MlflowClient().set_registered_model_alias("idx_cnn", "champion", "1")
        yield Store(tmp_path / "store", uri)


def test_every_file_of_a_version_is_digested_where_sha256sum_can_check_it(swappable, tmp_path):
    from neuroflow.tracking.digests import DIGEST_TAG, MANIFEST, digest_of

    version = mlflow.MlflowClient().get_model_version("idx_mlp", "1")
    source = mlflow.get_run(version.tags["source_run"])
    assert version.tags[DIGEST_TAG] == source.data.tags[DIGEST_TAG]  # as training logged it
    manifest = mlflow.artifacts.load_text(version.tags["model_manifest"])
    assert digest_of(manifest) == version.tags[DIGEST_TAG]
    listed = {line.split("  ", 1)[1] for line in manifest.splitlines()}
    expected = {"MLmodel", "model_code.py", "requirements.txt", "conda.yaml", "python_env.yaml"}
    expected |= {"artifacts/network/spec.json", "artifacts/network/weights.pt"}
    assert expected <= listed and "code/neuroflow/tracking/networks.py" in listed
    folder = Path(mlflow.artifacts.download_artifacts("models:/idx_mlp/1", dst_path=tmp_path))
    (folder / MANIFEST).write_text(manifest)
    checked = subprocess.run(
        ["sha256sum", "--check", "--quiet", MANIFEST], cwd=folder, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("path", ["model_code.py", "artifacts/network/weights.pt"])
def test_a_swapped_file_is_refused_by_every_load_before_any_code_of_the_model_runs(
    swappable, prepared_store, path
):
    """promote and predict (as `mlflow run` runs them: one line, the run FAILED, the registry
    as it was), the DCGAN's evaluator (no quick CNN instead) and the project's own loader."""
    from helpers import registry_bytes
    from neuroflow.errors import RunLookupError
    from neuroflow.jobs.train_dcgan import train_dcgan

    for name in ("idx_mlp", "idx_cnn"):
        swap(name, path, swappable.folder)
    before = registry_bytes(swappable.client)
    data = prepared_store.ref.run_id
    for result in (
        swappable.step("promote", model_name="idx_mlp"),
        swappable.step("predict", model="models:/idx_mlp@challenger", data=data),
    ):
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1, result.stderr
        changed = f"its file {path} changed since it was registered as version 1 of 'idx_mlp'"
        assert changed in lines[0]
        assert swappable.get(result.run_id).info.status == "FAILED"
    assert registry_bytes(swappable.client) == before
    gan = GANTrainConfig(epochs=1, max_batches=1, device="cpu")
    changed = f"its file {path} changed since"
    with pytest.raises(RunLookupError, match=changed), mlflow.start_run():  # the champion CNN
        train_dcgan(DCGANConfig(latent_dim=8, width=4), gan, data, "")
    with pytest.raises(RunLookupError, match=changed):
        load_model("models:/idx_cnn/1")
    assert not (swappable.folder / MARKER).exists(), "the swapped model's code was imported"


def test_a_version_is_fetched_checked_to_serve_and_a_swapped_one_is_not(swappable, tmp_path):
    from neuroflow.errors import RunLookupError
    from neuroflow.tracking.digests import fetch

    fetch.main(["models:/idx_rnn@challenger", str(tmp_path / "rnn")], standalone_mode=False)
    served = mlflow.pyfunc.load_model(str(tmp_path / "rnn"))
    assert served.predict(inputs("rnn")).shape == (7,)
    swap("idx_rnn", "artifacts/network/weights.pt", swappable.folder)
    with pytest.raises(RunLookupError, match="weights.pt changed since it was registered"):
        fetch.main(["models:/idx_rnn/1", str(tmp_path / "swapped")], standalone_mode=False)
    assert not (tmp_path / "swapped").exists()
