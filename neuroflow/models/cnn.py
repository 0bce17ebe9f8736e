"""A small convolutional network sized for 28x28 digits."""

from __future__ import annotations

from torch import nn

from neuroflow.models.configs import CNNConfig


class CNN(nn.Module):
    def __init__(self, config: CNNConfig, image_shape: tuple[int, int], num_classes: int):
        super().__init__()
        blocks: list[nn.Module] = []
        in_channels, (height, width) = 1, image_shape
        for channels in config.channels:
            blocks += [
                nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            in_channels, height, width = channels, height // 2, width // 2
        if height < 1 or width < 1:
            raise ValueError(
                f"{len(config.channels)} pooling blocks shrink {image_shape} images to nothing; "
                "expected fewer channels entries or larger images"
            )
        self.conv = nn.Sequential(*blocks)  # (B, 1, H, W) -> (B, C, H / 2^k, W / 2^k)
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(in_channels * height * width, config.hidden),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.hidden, num_classes))

    def features(self, x):
        return self.body(self.conv(x))  # (B, hidden)

    def forward(self, x):
        return self.head(self.features(x))  # (B, C)
