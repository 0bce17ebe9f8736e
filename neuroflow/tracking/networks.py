"""A network as files that load without pickle: spec.json (what neuroflow.models.build.rebuild
needs) and weights.pt (its state dict, read back with torch.load(weights_only=True), which
accepts tensors and plain containers only). NetworkModel is the pyfunc over them that every
logged model serves through."""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from pathlib import Path

import mlflow
import numpy as np

from neuroflow.errors import NeuroflowError

NETWORK = "network"  # the pyfunc artifact holding a model's spec.json and weights.pt
SPEC, WEIGHTS = "spec.json", "weights.pt"
KINDS = ("classifier", "generator")  # what neuroflow.models.build.describe writes
PROBABILITIES = "probabilities"  # the classifiers' one inference parameter


class NetworkError(NeuroflowError):
    """Files that do not hold a network this project saved."""


def save_network(module, folder: Path) -> None:
    import torch

    from neuroflow.models.build import describe

    (folder / SPEC).write_text(json.dumps(describe(module), indent=1))
    weights = {name: value.detach().cpu() for name, value in module.state_dict().items()}
    torch.save(weights, folder / WEIGHTS)


def check_network(folder: Path) -> str:
    """Check, without torch, that `folder` holds a whole network of ours: a spec of a kind we
    save and a weights file whose every byte is as written. Returns the weights' sha256.
    Files that are missing, corrupt or truncated raise a one-line NetworkError."""
    try:
        spec = json.loads((folder / SPEC).read_text())
    except OSError:
        raise NetworkError(f"it has no readable {SPEC}, so another project logged it") from None
    except ValueError as error:
        raise NetworkError(f"its {SPEC} is not JSON ({error})") from None
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise NetworkError(f"its {SPEC} does not describe a network of ours")
    try:  # torch.save writes a zip archive, each member with its CRC
        with zipfile.ZipFile(folder / WEIGHTS) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise NetworkError(f"its {WEIGHTS} is corrupt or truncated ({error})") from None
    if bad is not None:
        raise NetworkError(f"its {WEIGHTS} is corrupt ({bad} does not match its checksum)")
    return hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()


def load_network(folder: Path):
    """The module saved in `folder`, in eval mode on the CPU. Files that are missing, corrupt,
    truncated or describe another network raise a one-line NetworkError."""
    import torch

    from neuroflow.models.build import rebuild

    try:
        spec = json.loads((folder / SPEC).read_text())
        with torch.random.fork_rng(devices=[]):  # the fresh weights must not move the caller's
            module = rebuild(spec)  # random stream: a model loaded mid-training changes nothing
    except OSError:
        raise NetworkError(f"it has no readable {SPEC}, so another project logged it") from None
    except (ValueError, KeyError, TypeError) as error:  # JSON, or a spec of something else
        raise NetworkError(f"its {SPEC} does not describe a network of ours ({error})") from None
    try:
        weights = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or corrupt: zip, unpickling and EOF errors alike
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise NetworkError(f"its {WEIGHTS} is corrupt or truncated ({first})") from None
    try:
        module.load_state_dict(weights, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).splitlines()[0]
        raise NetworkError(f"its {WEIGHTS} does not fit its {SPEC} ({first})") from None
    return module.eval()


class NetworkModel(mlflow.pyfunc.PythonModel):
    """The pyfunc: numpy in, the network's forward() on the CPU, numpy out. A classifier takes
    raw pixels 0..255, uint8 or float: (B, H, W) grey or (B, H, W, C) colour, at any size,
    brought to its input by its data's input rule (to its channels and size, a light
    background inverted where the rule says so), and returns (B,) class ids, or with params
    {"probabilities": true} a frame of each image's class and its probability; the generator
    takes (B, latent_dim) latents and returns (B, H, W) pixels, (B, H, W, C) in colour."""

    def load_context(self, context) -> None:
        from neuroflow.data.framing import InputRule

        self.network = load_network(Path(context.artifacts[NETWORK]))
        if hasattr(self.network, "input_rule"):  # a classifier applies its data's input rule
            size = self.network.standardize.image_shape[0]
            self.rule = InputRule.from_dict(self.network.input_rule, size)

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        import torch

        model_input = np.asarray(model_input)
        if model_input.ndim in (3, 4) and hasattr(self.network, "input_rule"):  # images
            model_input = self.rule.apply(model_input)
        inputs = torch.as_tensor(model_input, dtype=torch.float32)
        with torch.inference_mode():
            if (params or {}).get(PROBABILITIES):
                import pandas as pd

                best, classes = self.network.logits(inputs).double().softmax(dim=1).max(dim=1)
                return pd.DataFrame({"class": classes.numpy(), "probability": best.numpy()})
            return self.network(inputs).numpy()
