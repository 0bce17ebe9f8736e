"""The four model families and how each is judged. No torch or mlflow: the doors read this."""

from __future__ import annotations

from dataclasses import dataclass

CLASSIFIERS = ("mlp", "cnn", "rnn")
FAMILIES = (*CLASSIFIERS, "dcgan")


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool

    def gain(self, candidate: float, incumbent: float) -> float:
        """How much better `candidate` is than `incumbent`; negative when worse."""
        return candidate - incumbent if self.higher_is_better else incumbent - candidate


ACCURACY = Metric("test_accuracy", higher_is_better=True)
FID = Metric("fid", higher_is_better=False)  # in one shared evaluator's feature space
PRIMARY_METRIC = {"mlp": ACCURACY, "cnn": ACCURACY, "rnn": ACCURACY, "dcgan": FID}
METRICS = {m.name: m for m in PRIMARY_METRIC.values()}


def metric_for(family: str, name: str = "") -> Metric:
    """The metric `family` is judged by: its primary one, or `name` if that is valid for it."""
    primary = PRIMARY_METRIC[family]
    if name and name != primary.name:
        raise ValueError(f"a {family} is judged by {primary.name}, not {name!r}")
    return primary
