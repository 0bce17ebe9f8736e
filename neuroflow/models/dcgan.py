"""A DCGAN after Radford et al. (2015), adapted to 28x28: images come from a 7x7 feature map
upsampled twice, so the image sides must be multiples of 4."""

from __future__ import annotations

import torch
from torch import nn

from neuroflow.families import DCGANConfig


def check_image_shape(image_shape: tuple[int, int]) -> None:
    height, width = image_shape
    if height % 4 or width % 4 or min(height, width) < 8:
        raise ValueError(
            f"the DCGAN cannot make {height}x{width} images; expected sides that are "
            "multiples of 4 and at least 8, such as 28x28"
        )


def _upsample(in_channels: int, out_channels: int, mode: str) -> nn.Module:
    if mode == "transposed":
        return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
    return nn.Sequential(  # nearest, the one mode left that DCGANConfig accepts
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
    )


class Generator(nn.Module):
    """z (B, latent_dim) -> images (B, 1, H, W) in [-1, 1]."""

    def __init__(self, config: DCGANConfig, image_shape: tuple[int, int]):
        super().__init__()
        check_image_shape(image_shape)
        self.start = (2 * config.width, image_shape[0] // 4, image_shape[1] // 4)  # (C, H/4, W/4)
        self.project = nn.Sequential(
            nn.Linear(config.latent_dim, self.start[0] * self.start[1] * self.start[2], bias=False),
            nn.BatchNorm1d(self.start[0] * self.start[1] * self.start[2]),
            nn.ReLU(inplace=True),
        )
        self.upsample = nn.Sequential(
            _upsample(2 * config.width, config.width, config.upsample),  # -> (B, width, H/2, W/2)
            nn.BatchNorm2d(config.width),
            nn.ReLU(inplace=True),
            _upsample(config.width, 1, config.upsample),  # -> (B, 1, H, W)
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z).view(-1, *self.start))


class Discriminator(nn.Module):
    """images (B, 1, H, W) in [-1, 1] -> (B,) logits that they are real (critic scores for
    WGAN-GP, where `norm` should be "layer": a gradient penalty per sample needs no batch norm)."""

    def __init__(self, config: DCGANConfig, image_shape: tuple[int, int], norm: str = "batch"):
        super().__init__()
        check_image_shape(image_shape)
        wide = 2 * config.width
        normalise = nn.BatchNorm2d(wide) if norm == "batch" else nn.GroupNorm(1, wide)
        self.body = nn.Sequential(
            nn.Conv2d(1, config.width, 4, stride=2, padding=1),  # -> (B, width, H/2, W/2)
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(config.dropout),
            nn.Conv2d(config.width, wide, 4, stride=2, padding=1, bias=False),  # -> H/4, W/4
            normalise,
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(config.dropout),
            nn.Flatten(),
        )
        self.head = nn.Linear(wide * (image_shape[0] // 4) * (image_shape[1] // 4), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images)).squeeze(1)


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) for conv and linear weights, N(1, 0.02) for norm scales (Radford et al.)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class ImageGenerator(nn.Module):
    """What is logged and served: latent vectors (B, latent_dim) in, images (B, H, W) out, as
    raw pixel values in 0..255 like the classifiers take."""

    def __init__(self, generator: Generator, config: dict):
        super().__init__()
        self.generator = generator
        self.config = dict(config)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        images = self.generator(z.float())  # (B, 1, H, W) in [-1, 1]
        return ((images.squeeze(1) + 1) * 127.5).clamp(0, 255)
