"""The model families, each declared once: a Family registration holds its name, kind, network,
model config, training defaults, search space and primary metric. Every table keyed by a
family's name (neuroflow.settings' MODELS, TRAINING and SPACES, the choices of the options that
name a family, the entry points, the networks) is derived from the registrations. The four
built-in families are registered in neuroflow.settings, beside their configs. No torch or
mlflow: the doors read this."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field

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
    makes as it is imported, for a family registered before that)."""
    if not re.fullmatch(r"[a-z][a-z0-9]*", family.name):
        raise ValueError(f"family name {family.name!r}: expected lower-case letters and digits")
    if family.kind not in (CLASSIFIER, GENERATOR):
        raise ValueError(f"family {family.name!r}: kind {family.kind!r} is not a known kind")
    if _REGISTERED.get(family.name, family) != family:
        raise ValueError(f"family {family.name!r} is registered already, otherwise")
    _REGISTERED[family.name] = family
    return family


def registered() -> dict[str, Family]:
    """Every family, the built-in ones first unless one was registered before them."""
    import neuroflow.settings  # noqa: F401  (registers the built-in families)

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
