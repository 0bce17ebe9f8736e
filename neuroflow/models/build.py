"""Networks built from their configs (neuroflow.settings), the family chosen by name from one
dict. A logged model stores its config, so the same call rebuilds it. Imports torch."""

from __future__ import annotations

from dataclasses import asdict

from neuroflow.models.classifier import ImageClassifier, Standardize
from neuroflow.models.cnn import CNN
from neuroflow.models.dcgan import Discriminator, Generator, init_weights
from neuroflow.models.mlp import MLP
from neuroflow.models.rnn import RNN
from neuroflow.settings import MODELS, DCGANConfig

NETWORKS = {"mlp": MLP, "cnn": CNN, "rnn": RNN}  # each classifier family's network


def build_classifier(family: str, config, image_shape, mean: float, std: float, classes):
    """An ImageClassifier of `family`; `config` is its config dataclass, or that as a dict."""
    if isinstance(config, dict):
        config = MODELS[family](**config)
    net = NETWORKS[family](config, tuple(image_shape), len(classes))
    return ImageClassifier(
        family, asdict(config), net, Standardize(image_shape, mean, std), classes
    )


def build_gan(config: DCGANConfig, image_shape, loss: str) -> tuple[Generator, Discriminator]:
    """A generator and its critic, weights drawn from N(0, 0.02). The critic normalises with
    BatchNorm, or per sample with LayerNorm for wgan-gp, whose gradient penalty is per sample."""
    generator = Generator(config, image_shape)
    critic = Discriminator(config, image_shape, "batch" if loss == "bce" else "layer")
    generator.apply(init_weights)
    critic.apply(init_weights)
    return generator, critic
