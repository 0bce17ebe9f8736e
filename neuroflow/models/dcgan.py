"""A DCGAN after Radford et al. (2015), adapted to any size from 8 pixels up, grey or in colour.

Images come from a small feature map upsampled `stages` times, each doubling the sides and
halving the channels (the first map has width * 2^(stages - 1)); the critic mirrors it. The
depth follows the size: two stages (28 -> a 7x7 map, 32 -> 8x8), and one more each time the map
would otherwise be larger than MAX_SIDE (64 -> three stages and 8x8, 128 -> four). The image
sides must be multiples of 4 (of 2^stages)."""

from __future__ import annotations

import torch
from torch import nn

from neuroflow.families import DCGANConfig
from neuroflow.models.classifier import chw

MAX_SIDE = 8  # the largest first map the depth allows, where a side can still be halved


def check_image_shape(image_shape: tuple[int, ...]) -> None:
    _, height, width = chw(image_shape)
    if height % 4 or width % 4 or min(height, width) < 8:
        raise ValueError(
            f"the DCGAN cannot make {height}x{width} images; expected sides that are "
            "multiples of 4 and at least 8, such as 28x28"
        )


def stages(image_shape: tuple[int, ...]) -> int:
    """How many times the map doubles on its way to the image (see the module)."""
    _, height, width = chw(image_shape)
    count = 2
    while max(height, width) >> count > MAX_SIDE and not (height | width) % (1 << (count + 1)):
        count += 1
    return count


def _upsample(in_channels: int, out_channels: int, mode: str) -> nn.Module:
    if mode == "transposed":
        return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
    return nn.Sequential(  # nearest, the one mode left that DCGANConfig accepts
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
    )


class Generator(nn.Module):
    """z (B, latent_dim) -> images (B, C, H, W) in [-1, 1], for (C, H, W) or (H, W)
    `image_shape`."""

    def __init__(self, config: DCGANConfig, image_shape: tuple[int, ...]):
        super().__init__()
        check_image_shape(image_shape)
        self.shape = chw(image_shape)  # (C, H, W)
        channels, height, width = self.shape
        depth = stages(self.shape)
        widths = [config.width << (depth - 1 - stage) for stage in range(depth)]  # ..., 2w, w
        self.start = (widths[0], height >> depth, width >> depth)  # (C', H/2^k, W/2^k)
        features = self.start[0] * self.start[1] * self.start[2]
        self.project = nn.Sequential(
            nn.Linear(config.latent_dim, features, bias=False),
            nn.BatchNorm1d(features),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for wide, narrow in zip(widths, widths[1:], strict=False):  # each doubles the sides
            layers += [_upsample(wide, narrow, config.upsample), nn.BatchNorm2d(narrow)]
            layers.append(nn.ReLU(inplace=True))
        layers += [_upsample(widths[-1], channels, config.upsample), nn.Tanh()]  # (B, C, H, W)
        self.upsample = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z).view(-1, *self.start))


class Discriminator(nn.Module):
    """images (B, C, H, W) in [-1, 1] -> (B,) logits that they are real (critic scores for
    WGAN-GP, where `norm` should be "layer": a gradient penalty per sample needs no batch norm)."""

    def __init__(self, config: DCGANConfig, image_shape: tuple[int, ...], norm: str = "batch"):
        super().__init__()
        check_image_shape(image_shape)
        channels, height, width = chw(image_shape)
        depth = stages(image_shape)
        layers: list[nn.Module] = [
            nn.Conv2d(channels, config.width, 4, stride=2, padding=1),  # -> (B, width, H/2, W/2)
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(config.dropout),
        ]
        wide = config.width
        for _ in range(depth - 1):  # each halves the sides and doubles the channels
            narrow, wide = wide, wide * 2
            normalise = nn.BatchNorm2d(wide) if norm == "batch" else nn.GroupNorm(1, wide)
            layers += [nn.Conv2d(narrow, wide, 4, stride=2, padding=1, bias=False), normalise]
            layers += [nn.LeakyReLU(0.2, inplace=True), nn.Dropout(config.dropout)]
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(wide * (height >> depth) * (width >> depth), 1)

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
    """What is logged and served: latent vectors (B, latent_dim) in, images out as raw pixel
    values in 0..255 like the classifiers take: (B, H, W) grey, or (B, H, W, C) in colour."""

    def __init__(self, generator: Generator, config: dict):
        super().__init__()
        self.generator = generator
        self.config = dict(config)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        images = self.generator(z.float())  # (B, C, H, W) in [-1, 1]
        images = images.squeeze(1) if images.shape[1] == 1 else images.permute(0, 2, 3, 1)
        return ((images + 1) * 127.5).clamp(0, 255)
