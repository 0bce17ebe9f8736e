"""The module every classifier family is wrapped in: raw pixels in, class ids out.

Scaling and normalisation live inside it, so training, evaluation and serving all start from
the same raw 0..255 pixel values and cannot drift apart.
"""

from __future__ import annotations

import torch
from torch import nn


class Standardize(nn.Module):
    """Raw pixels (B, H, W), (B, H*W) or (B, 1, H, W), any dtype -> normalised (B, 1, H, W)."""

    def __init__(self, image_shape: tuple[int, int], mean: float, std: float):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 1, *self.image_shape).float()
        return (x / 255 - self.mean) / self.std


class ImageClassifier(nn.Module):
    """`net` maps normalised (B, 1, H, W) images to (B, C) logits and has `features()` for the
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
