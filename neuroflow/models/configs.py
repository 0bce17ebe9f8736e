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
    channels: tuple[int, ...] = (16, 32)  # one stride-2 conv-BN-ReLU block each: 28 -> 14 -> 7
    dropout: float = 0.25
    hidden: int = 128  # width of the penultimate layer, the feature space FID is measured in


RNN_CELLS = ("lstm", "gru", "rnn")


@dataclass(frozen=True)
class RNNConfig:
    cell: str = "lstm"  # one of RNN_CELLS; a plain rnn forgets the top rows by the last step
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # between stacked layers, and before the head


UPSAMPLES = ("nearest", "transposed")


@dataclass(frozen=True)
class DCGANConfig:
    latent_dim: int = 100  # Radford et al.'s z
    width: int = 32  # channels of G's last and D's first block; 64 is 3x slower on a CPU
    upsample: str = "nearest"  # nearest + conv avoids the checkerboard of transposed convs
    dropout: float = 0.1  # in the discriminator: 0.3 slowed learning on 1,259 digits
