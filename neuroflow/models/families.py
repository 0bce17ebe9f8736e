"""Model families, chosen by name from one dict. Importing this module imports torch."""

from __future__ import annotations

from dataclasses import asdict

from neuroflow.models.classifier import ImageClassifier, Standardize
from neuroflow.models.cnn import CNN
from neuroflow.models.configs import CNNConfig, MLPConfig, RNNConfig
from neuroflow.models.mlp import MLP
from neuroflow.models.rnn import RNN

CLASSIFIERS = {
    "mlp": (MLPConfig, MLP),
    "cnn": (CNNConfig, CNN),
    "rnn": (RNNConfig, RNN),
}


def build_classifier(family: str, config, image_shape, mean: float, std: float, classes):
    """An ImageClassifier of `family`; `config` is its config dataclass or that as a dict."""
    config_cls, net_cls = CLASSIFIERS[family]
    if isinstance(config, dict):
        config = config_cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        )
    net = net_cls(config, tuple(image_shape), len(classes))
    return ImageClassifier(
        family, asdict(config), net, Standardize(image_shape, mean, std), classes
    )
