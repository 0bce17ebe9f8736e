"""Each model family's hyperparameters, as the dataclass its module builds the network from.

They live apart from the networks so the steps can read defaults and check options without
importing torch (seconds of start-up per process). A logged model stores its config.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MLPConfig:
    hidden: tuple[int, ...] = (512, 256)  # wide enough for 96%+ on MNIST, still fast on a CPU
    dropout: float = 0.2


@dataclass(frozen=True)
class CNNConfig:
    channels: tuple[int, ...] = (32, 64)  # one conv-BN-ReLU-pool block each: 28 -> 14 -> 7
    dropout: float = 0.25
    hidden: int = 128  # width of the penultimate layer, the feature space FID is measured in
