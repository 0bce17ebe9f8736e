"""The model families, each declared once: a Family registration holds its name, kind, network,
model config, training defaults, search space and primary metric. Every table keyed by a
family's name (neuroflow.settings' MODELS, TRAINING and SPACES, the choices of the options that
name a family, the entry points, the networks) is derived from the registrations. The four
built-in families are registered at the end, each beside its model config: a logged model
stores its config, so it can be rebuilt (neuroflow.models.build). No torch or mlflow: the doors
read this."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field

from neuroflow.config import Checked, Setting, config, setting

CLASSIFIER, GENERATOR = "classifier", "generator"


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool

    def gain(self, candidate: float, incumbent: float) -> float:
        """How much better `candidate` is than `incumbent`; negative when worse."""
        return candidate - incumbent if self.higher_is_better else incumbent - candidate


ACCURACY = Metric("test_accuracy", higher_is_better=True)
FID = Metric("fid", higher_is_better=False)  # in one shared evaluator's feature space


@dataclass(frozen=True)
class Family:
    name: str  # train_<name> is its entry point, <dataset>_<name> its default model name
    kind: str  # CLASSIFIER (trained by the classifier loop) or GENERATOR
    network: str  # "<module>:<class>" of its network, imported only to build one
    config: type  # its model config: a neuroflow.config.Checked dataclass
    metric: Metric  # what register and promote judge it by
    training: dict = field(default_factory=dict)  # its loop's defaults where they differ
    space: dict = field(default_factory=dict)  # tune's ranges beyond the shared ones


_REGISTERED: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add `family`; every derived table has it from then on (the tables neuroflow.settings
    makes as it is imported, for a family registered before that: see CONTRIBUTING.md)."""
    if not re.fullmatch(r"[a-z][a-z0-9]*", family.name):
        raise ValueError(f"family name {family.name!r}: expected lower-case letters and digits")
    if family.kind not in (CLASSIFIER, GENERATOR):
        raise ValueError(f"family {family.name!r}: kind {family.kind!r} is not a known kind")
    if _REGISTERED.get(family.name, family) != family:
        raise ValueError(f"family {family.name!r} is registered already, otherwise")
    _REGISTERED[family.name] = family
    return family


def registered() -> dict[str, Family]:
    """Every family, the built-in ones first."""
    return dict(_REGISTERED)


def family_named(name: str) -> Family:
    return registered()[name]


def network(name: str) -> type:
    """The network class of family `name` (importing it imports torch)."""
    module, _, attribute = family_named(name).network.partition(":")
    return getattr(importlib.import_module(module), attribute)


def metric_for(family: str, name: str = "") -> Metric:
    """The metric `family` is judged by: its primary one, or `name` if that is valid for it."""
    primary = family_named(family).metric
    if name and name != primary.name:
        raise ValueError(f"a {family} is judged by {primary.name}, not {name!r}")
    return primary


def __getattr__(name: str):
    """FAMILIES, CLASSIFIERS, PRIMARY_METRIC and METRICS, as the registrations hold them now."""
    tables = {
        "FAMILIES": lambda families: tuple(families),
        "CLASSIFIERS": lambda families: tuple(
            n for n, f in families.items() if f.kind == CLASSIFIER
        ),
        "PRIMARY_METRIC": lambda families: {n: f.metric for n, f in families.items()},
        "METRICS": lambda families: {f.metric.name: f.metric for f in families.values()},
    }
    if name in tables:
        return tables[name](registered())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the built-in families ----------------------------------------------------------------

RNN_CELLS = ("lstm", "gru", "rnn")
UPSAMPLES = ("nearest", "transposed")
DROPOUT = Setting(low=0, high=1, high_open=True, help="dropout probability")


@config
class MLPConfig(Checked):
    hidden: tuple[int, ...] = setting(  # wide enough for 96%+ on MNIST, still fast on a CPU
        (512, 256), help="hidden layer sizes"
    )
    dropout: float = DROPOUT.field(0.2)


@config
class CNNConfig(Checked):
    channels: tuple[int, ...] = setting(  # one stride-2 conv-BN-ReLU block each: 28 -> 14 -> 7
        (16, 32), help="output channels of each conv block; each block halves the image"
    )
    dropout: float = DROPOUT.field(0.25)
    # the width of the penultimate layer, the feature space FID is measured in
    hidden: int = setting(128, low=1, option=False)


@config
class RNNConfig(Checked):
    cell: str = setting(  # a plain rnn forgets the top rows by the last step
        "lstm", choices=RNN_CELLS, help="the RNN reads one row of pixels per time step"
    )
    hidden_size: int = setting(128, low=1, help="features of the hidden state")
    num_layers: int = setting(1, low=1, help="stacked recurrent layers")
    bidirectional: bool = setting(False, help="also read the rows bottom to top")
    dropout: float = DROPOUT.field(0.0)  # between stacked layers, and before the head


@config
class DCGANConfig(Checked):
    latent_dim: int = setting(100, low=1, help="length of the latent vector z (Radford et al.)")
    upsample: str = setting(  # nearest + conv avoids the checkerboard of transposed convs
        "nearest", choices=UPSAMPLES, help="nearest + conv, or transposed convolutions"
    )
    # channels of G's last and D's first block; 64 is 3x slower on a CPU
    width: int = setting(32, low=1, option=False)
    # in the discriminator: 0.3 slowed learning on the 1,259 digits
    dropout: float = DROPOUT.field(0.1, option=False)


# A family's training defaults are those of its loop's config where they differ; its space adds
# to the ranges every family searches (neuroflow.settings.ADAMW_SPACE).
register(
    Family(
        "mlp",
        CLASSIFIER,
        "neuroflow.models.mlp:MLP",
        MLPConfig,
        ACCURACY,
        space={"dropout": (0.0, 0.5, "linear"), "hidden": ["256", "512,256", "1024,512"]},
    )
)
register(
    Family(
        "cnn",
        CLASSIFIER,
        "neuroflow.models.cnn:CNN",
        CNNConfig,
        ACCURACY,
        training={"augment": "auto"},  # the digits only: see TrainConfig.augment
        space={"dropout": (0.0, 0.5, "linear"), "channels": ["16,32", "32,64", "16,32,64"]},
    )
)
register(
    Family(
        "rnn",
        CLASSIFIER,
        "neuroflow.models.rnn:RNN",
        RNNConfig,
        ACCURACY,
        # smaller batches (more steps on small data: GRU 0.922 -> 0.961 on the digits), and
        # clipped gradients
        training={"batch_size": 64, "grad_clip": 1.0},
        space={
            "batch_size": [32, 64, 128],
            "cell": ["lstm", "gru"],
            "hidden_size": [64, 128, 256],
        },
    )
)
register(Family("dcgan", GENERATOR, "neuroflow.models.dcgan:Generator", DCGANConfig, FID))
