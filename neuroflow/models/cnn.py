"""A small convolutional network sized for 28x28 digits, and fast on a CPU.

Each block is a stride-2 convolution (5x5 in the first block, 3x3 after), BatchNorm and ReLU:
the stride halves the image in the convolution itself, so no pooling pass follows, and the
network does a quarter of the work of a same-width conv-then-pool block. The weights are kept
channels_last, which oneDNN's CPU convolutions run faster.

The first block takes the image's channels (1 grey, 3 colour). Its depth follows the size: after
the configured blocks, blocks as wide as the last are added while the map is larger than
MAX_SIDE, so 28 and 32 pixels take the two blocks of the default, 64 three and 256 five.
"""

from __future__ import annotations

import torch
from torch import nn

from neuroflow.families import CNNConfig
from neuroflow.models.classifier import chw

FIRST_KERNEL, KERNEL = 5, 3
MAX_SIDE = 8  # the largest map the last block may leave: 28 -> 7, 32 -> 8, 64 -> 8


def widths(config: CNNConfig, image_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Each block's output channels: the configured ones, then the last again while the map
    left is larger than MAX_SIDE."""
    _, height, width = chw(image_shape)
    planned = list(config.channels)
    for _ in planned:
        height, width = (height + 1) // 2, (width + 1) // 2
    while max(height, width) > MAX_SIDE:
        planned.append(planned[-1])
        height, width = (height + 1) // 2, (width + 1) // 2
    return tuple(planned)


class CNN(nn.Module):
    def __init__(self, config: CNNConfig, image_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        blocks: list[nn.Module] = []
        in_channels, height, width = chw(image_shape)
        size = f"{height}x{width}"
        for index, channels in enumerate(widths(config, image_shape)):
            if height == 1 and width == 1:
                raise ValueError(
                    f"{len(config.channels)} stride-2 blocks shrink {size} images to 1x1 "
                    f"before block {index + 1}; expected fewer channels entries or larger images"
                )
            kernel = FIRST_KERNEL if index == 0 else KERNEL
            blocks += [
                nn.Conv2d(in_channels, channels, kernel, stride=2, padding=kernel // 2, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            in_channels, height, width = channels, (height + 1) // 2, (width + 1) // 2
        self.conv = nn.Sequential(*blocks)  # (B, C, H, W) -> (B, C', H / 2^k, W / 2^k), rounded up
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(in_channels * height * width, config.hidden),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.hidden, num_classes))
        self.conv.to(memory_format=torch.channels_last)

    def features(self, x):
        return self.body(self.conv(x))  # (B, hidden)

    def forward(self, x):
        return self.head(self.features(x))  # (B, C)
