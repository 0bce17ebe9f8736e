"""A multilayer perceptron over flattened pixels."""

from __future__ import annotations

from torch import nn

from neuroflow.families import MLPConfig
from neuroflow.models.classifier import chw


class MLP(nn.Module):
    def __init__(self, config: MLPConfig, image_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]  # (B, C, H, W) -> (B, C*H*W)
        channels, height, width = chw(image_shape)
        width = channels * height * width
        for size in config.hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(config.dropout)]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def features(self, x):
        return self.body(x)  # (B, hidden[-1])

    def forward(self, x):
        return self.head(self.body(x))  # (B, C)
