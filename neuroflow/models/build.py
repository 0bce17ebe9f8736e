"""Networks built from their configs, the family chosen by name from its
registration (neuroflow.families). A logged model stores its config, so the same call rebuilds
it. Imports torch."""

from __future__ import annotations

from dataclasses import asdict

from neuroflow.families import CLASSIFIER, DCGANConfig, family_named, network, registered
from neuroflow.models.classifier import ImageClassifier, Standardize
from neuroflow.models.dcgan import Discriminator, Generator, ImageGenerator, init_weights


def build_classifier(
    family: str,
    config,
    image_shape,
    mean: float,
    std: float,
    classes,
    input_rule: dict | None = None,
    dataset: str = "",
    channels: int = 1,
):
    """An ImageClassifier of `family` for (H, W) `image_shape` images of `channels` (1 grey,
    3 colour); `config` is its config dataclass, or that as a dict. `input_rule` and `dataset`
    say how its data was prepared and which dataset it is."""
    if isinstance(config, dict):
        config = family_named(family).config(**config)
    shape = (channels, *image_shape)  # (C, H, W): what every registered network takes
    net = network(family)(config, shape, len(classes))
    standardize = Standardize(image_shape, mean, std, channels)
    return ImageClassifier(family, asdict(config), net, standardize, classes, input_rule, dataset)


def for_data(prepared) -> dict:
    """What build_classifier takes from a prepared dataset (neuroflow.data.prepared.Prepared)."""
    return {
        "image_shape": prepared.image_shape,
        "channels": prepared.channels,
        "mean": prepared.mean,
        "std": prepared.std,
        "classes": prepared.classes,
        "input_rule": prepared.input_rule,
        "dataset": prepared.title,
    }


def build_gan(
    config: DCGANConfig, image_shape, loss: str, channels: int = 1
) -> tuple[Generator, Discriminator]:
    """A generator and its critic of (H, W) `image_shape` images of `channels`, weights drawn
    from N(0, 0.02). The critic normalises with BatchNorm, or per sample with LayerNorm for
    wgan-gp, whose gradient penalty is per sample."""
    shape = (channels, *image_shape)
    generator = Generator(config, shape)
    critic = Discriminator(config, shape, "batch" if loss == "bce" else "layer")
    generator.apply(init_weights)
    critic.apply(init_weights)
    return generator, critic


def describe(module) -> dict:
    """What rebuild() needs to make `module` again, weights aside: plain JSON values."""
    if isinstance(module, ImageClassifier):
        shape = module.standardize.image_shape
        return {
            "kind": "classifier",
            "family": module.family,
            "config": module.config,
            "image_shape": list(shape),
            "channels": module.standardize.channels,
            "classes": module.classes,
            "input_rule": module.input_rule,
            "dataset": module.dataset,
        }
    if isinstance(module, ImageGenerator):
        channels, height, width = module.generator.shape
        return {
            "kind": "generator",
            "config": module.config,
            "image_shape": [height, width],
            "channels": channels,
        }
    raise TypeError(f"{type(module).__name__} is neither an ImageClassifier nor an ImageGenerator")


def rebuild(spec: dict):
    """The module describe() described, with fresh weights: an ImageClassifier or an
    ImageGenerator. A spec that names an unknown kind or family, or settings its config does
    not have, raises ValueError or TypeError."""
    kind, shape = spec["kind"], tuple(spec["image_shape"])
    channels = spec.get("channels", 1)  # absent from models logged before colour
    if kind == "classifier":
        known = registered().get(spec["family"])
        if known is None or known.kind != CLASSIFIER:
            raise ValueError(f"unknown classifier family {spec['family']!r}")
        # mean and std are buffers: the weights bring their values
        return build_classifier(
            spec["family"],
            spec["config"],
            shape,
            0.0,
            1.0,
            spec["classes"],
            spec.get("input_rule"),  # absent from models logged before they carried one
            spec.get("dataset", ""),
            channels,
        )
    if kind == "generator":
        generator = Generator(DCGANConfig(**spec["config"]), (channels, *shape))
        return ImageGenerator(generator, spec["config"])
    raise ValueError(f"unknown network kind {kind!r}")
