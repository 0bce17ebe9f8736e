"""The module every classifier family is wrapped in: raw pixels in, class ids out.

Scaling and normalisation live inside it, so training, evaluation and serving all start from
the same raw 0..255 pixel values and cannot drift apart.
"""

from __future__ import annotations

import torch
from torch import nn


def chw(image_shape) -> tuple[int, int, int]:
    """A network's input shape as (C, H, W): (H, W) is one channel."""
    shape = tuple(int(side) for side in image_shape)
    return shape if len(shape) == 3 else (1, *shape)


class Standardize(nn.Module):
    """Raw pixels, any dtype -> normalised (B, C, H, W). One channel: (B, H, W), (B, H*W) or
    (B, 1, H, W). Colour: (B, H, W, C), channels last as images are kept, or flattened."""

    def __init__(self, image_shape: tuple[int, int], mean: float, std: float, channels: int = 1):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.channels = channels
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    @property
    def pixel_shape(self) -> tuple[int, ...]:
        """One raw image's shape: (H, W), or (H, W, C) in colour."""
        channels = self.channels
        return self.image_shape if channels == 1 else (*self.image_shape, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels == 1:
            x = x.reshape(x.shape[0], 1, *self.image_shape)
        else:
            x = x.reshape(x.shape[0], *self.image_shape, self.channels).permute(0, 3, 1, 2)
        return (x.float() / 255 - self.mean) / self.std


class ImageClassifier(nn.Module):
    """`net` maps normalised (B, C, H, W) images to (B, classes) logits and has `features()` for the
    penultimate layer. forward() returns (B,) class ids, which is what pyfunc and serving return."""

    def __init__(
        self,
        family: str,
        config: dict,
        net: nn.Module,
        standardize: Standardize,
        classes,
        input_rule: dict | None = None,
        dataset: str = "",
    ):
        super().__init__()
        self.family = family
        self.config = dict(config)  # rebuilds the net: see neuroflow.models.build_classifier
        self.classes = list(classes)
        # how its training images were brought to size (neuroflow.data.framing.InputRule), and
        # which dataset they were: a model carries both, so predict, serving and the DCGAN's
        # evaluator check treat it as its data was treated
        self.input_rule = dict(input_rule or {})
        self.dataset = dataset
        self.standardize = standardize
        self.net = net

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardize(x))  # (B, C)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(self.standardize(x))  # (B, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(dim=1)  # (B,)
