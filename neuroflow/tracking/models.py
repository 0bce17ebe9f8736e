"""Models as MLflow holds them: each trainer's logged with a signature and our code beside it,
in a form that loads without pickle, and loaded back, for an evaluator or a promotion, with a
one-line error when it cannot be."""

from __future__ import annotations

import contextlib
import functools
import tempfile
from pathlib import Path
from typing import NamedTuple

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

import neuroflow
from neuroflow.errors import RunLookupError
from neuroflow.tracking import digests
from neuroflow.tracking.digests import ModelFilesError, Recorded, file_sha256
from neuroflow.tracking.networks import (
    NETWORK,
    PROBABILITIES,
    SPEC,
    WEIGHTS,
    NetworkError,
    check_network,
    load_network,
    save_network,
)
from neuroflow.tracking.pins import read_pins

MODEL_NAME = "model"  # the name every trainer logs its model under
MODEL_CODE = Path(__file__).with_name("model_code.py")  # what MLflow runs to load one
SERVING_PACKAGES = ("torch", "numpy", "mlflow")  # what a served model needs besides our code


def serving_requirements() -> list[str]:
    _, pins = read_pins()
    return [pin for pin in pins if pin.split("==")[0] in SERVING_PACKAGES]


def log_classifier(model, examples: np.ndarray):
    """Log an ImageClassifier: raw (B, H, W) float32 pixels in (B, H, W, C) in colour, (B,)
    int64 class ids out, or with params {"probabilities": true} each image's class and its
    probability."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *examples.shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]),
        params=ParamSchema([ParamSpec(PROBABILITIES, "boolean", False)]),
    )
    # in MLmodel too, for a client of the served model to read
    metadata = {
        "input_rule": model.input_rule,
        "dataset": model.dataset,
        "channels": model.standardize.channels,
    }
    return _log_model(model.cpu().eval(), signature, examples.astype(np.float32), metadata)


def _log_model(model, signature, example, metadata=None):
    """Log `model` as MLflow's models-from-code: MLflow keeps model_code.py, our code beside it
    and the network as a JSON spec and a weights file. Loading runs that code and reads the
    weights as tensors only: nothing is unpickled. The code is the store's copy, so every load
    here checks it first against the digests recorded now (record_stored). It loads and serves
    with only torch, numpy and mlflow."""
    with tempfile.TemporaryDirectory() as tmp, pins_checked_alone():
        folder = Path(tmp) / NETWORK
        folder.mkdir()
        save_network(model, folder)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(MODEL_CODE),
            artifacts={NETWORK: str(folder)},
            signature=signature,
            input_example=example,
            code_paths=[str(Path(neuroflow.__file__).parent)],
            pip_requirements=serving_requirements(),
            metadata=metadata,
        )
        record_stored(info, folder, Path(tmp) / "stored")
    return info


def record_stored(info, saved: Path, tmp: Path) -> None:
    """Read the model just logged back from the store, check that it holds what we wrote (the
    network `saved`, model_code.py and our code), and record the digests of all its files (see
    neuroflow.tracking.digests). A store on this machine is read in place: a copy would cost
    more than the rest of logging."""
    from mlflow.utils.file_utils import local_file_uri_to_path
    from mlflow.utils.uri import is_local_uri

    location = mlflow.get_logged_model(info.model_id).artifact_location
    if is_local_uri(location, is_tracking_or_registry_uri=False):
        local = Path(local_file_uri_to_path(location))
    else:
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp)))
    network = network_dir(local).relative_to(local).as_posix()
    expected = {f"{network}/{name}": file_sha256(saved / name) for name in (SPEC, WEIGHTS)}
    expected |= code_digests()
    text = digests.manifest(local)
    stored = {
        path: sha
        for path, sha in digests.parse(text).items()
        if path in expected or path.startswith("code/")
    }
    if stored != expected:
        wrong = min(set(stored.items()) ^ set(expected.items()))[0]
        raise NetworkError(f"the {wrong} stored for {info.model_uri} is not the one logged")
    digests.record(info, text)


@functools.cache
def code_digests() -> dict[str, str]:
    """The sha256 of model_code.py and of every file of our package, where a logged model keeps
    them; once a process, as the code does not change under it."""
    package = Path(neuroflow.__file__).parent
    files = {"model_code.py": MODEL_CODE}
    files |= {
        f"code/neuroflow/{path.relative_to(package).as_posix()}": path
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts  # MLflow leaves bytecode out
    }
    return {relative: file_sha256(path) for relative, path in files.items()}


@contextlib.contextmanager
def pins_checked_alone():
    """While a model is logged, MLflow checks its pins against the installed packages through
    a map of every installed module to its distribution, built on first use by reading every
    distribution's file list: 0.7 s of each training step on 2 cores, for three pins. Hand it
    the map of what the pins name (SERVING_PACKAGES, each importable under its own name), so
    the check still runs, on those alone. MLflow keeps the map in a private module global;
    where it keeps it elsewhere, this changes nothing and the check scans as before."""
    from mlflow.utils import requirements_utils

    saved = getattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    if saved is None:
        requirements_utils._MODULES_TO_PACKAGES = {name: [name] for name in SERVING_PACKAGES}
    try:
        yield
    finally:
        if saved is None:
            requirements_utils._MODULES_TO_PACKAGES = None


def log_generator(model, latent_dim: int):
    """Log an ImageGenerator: (B, latent_dim) float32 latents in, (B, H, W) float32 pixels out,
    (B, H, W, C) in colour."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    channels, height, width = model.generator.shape
    pixels = (height, width) if channels == 1 else (height, width, channels)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, latent_dim))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *pixels))]),
    )
    example = np.random.default_rng(0).standard_normal((2, latent_dim)).astype(np.float32)
    return _log_model(model, signature, example)


def load_model(uri: str, role: str = "model", expected: str = "the URI of a logged model"):
    """The torch module logged at `uri`, on the CPU, rebuilt from its spec and weights without
    unpickling anything, once every file of the model is as recorded when it was logged or
    registered. When it cannot be, a one-line RunLookupError naming the URI in its `role` and
    what was `expected`: a URI that names nothing, a model with no recorded digests (another
    project logged it), a file changed since, a corrupt or truncated spec or weights file."""
    with tempfile.TemporaryDirectory() as tmp:
        fetched = fetch_model(uri, Path(tmp) / "model", role, expected)
        try:
            return load_network(network_dir(fetched.folder))
        except NetworkError as error:
            raise unloadable(uri, error, role, expected) from None


def check_model(uri: str, role: str, expected: str) -> tuple[str, str]:
    """Check, without torch, that the model at `uri` is one this project logged and is whole:
    every file as recorded when it was logged (see fetch_model). Returns its manifest and its
    weights' sha256; a one-line RunLookupError naming the URI in its `role` otherwise."""
    with tempfile.TemporaryDirectory() as tmp:
        fetched = fetch_model(uri, Path(tmp) / "model", role, expected)
        return fetched.manifest, file_sha256(network_dir(fetched.folder) / WEIGHTS)


class Fetched(NamedTuple):
    folder: Path  # the checked copy
    recorded: Recorded  # what was recorded when the model was logged or registered
    manifest: str  # its files' sha256, as checked


def fetch_model(uri: str, folder: Path, role: str, expected: str) -> Fetched:
    """The model at `uri` downloaded into `folder` and checked. Before the download, what was
    recorded when it was logged or registered is looked up (an alias is resolved to its
    version, and that version downloaded); after it, every file is checked against that, and
    the network against its own checksums, before anything reads them."""
    try:
        recorded = digests.recorded(uri)
        local = Path(mlflow.artifacts.download_artifacts(recorded.uri, dst_path=str(folder)))
        manifest = digests.verify(local, recorded)
        check_network(network_dir(local))
    except (ModelFilesError, NetworkError, MlflowException, OSError) as error:
        raise unloadable(uri, error, role, expected) from None
    return Fetched(local, recorded, manifest)


def network_dir(model_dir: Path) -> Path:
    """Where, in a downloaded MLflow model, the network we logged lies."""
    from mlflow.models import Model

    if not (model_dir / "MLmodel").is_file():
        raise NetworkError("it is not an MLflow model (no MLmodel file)")
    pyfunc = Model.load(str(model_dir)).flavors.get("python_function", {})
    saved = pyfunc.get("artifacts", {}).get(NETWORK)
    if not saved:
        raise NetworkError(
            f"it holds no {NETWORK!r} artifact: another project logged it, or a release of "
            "this one from before models loaded without pickle (retrain it)"
        )
    return model_dir / saved["path"]


def unloadable(uri: str, error: Exception, role: str, expected: str) -> RunLookupError:
    message = str(error).splitlines()[0]
    return RunLookupError(
        f"{role} {uri or '(empty URI)'} cannot be loaded: {message}; expected {expected}"
    )
