"""Options every trainer shares, and the device and seed set once before training."""

from __future__ import annotations

import random
from dataclasses import dataclass

OPTIMIZERS = ("adamw", "adam", "sgd")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3  # the peak of a one-cycle schedule
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    seed: int = 0
    patience: int = 3  # epochs without a better val_loss before stopping; 0 never stops early
    grad_clip: float = 0.0  # max gradient norm; 0 = no clipping (train_rnn clips by default)
    device: str = "auto"
    max_batches: int = 0  # train batches per epoch; 0 = all (a small number makes a smoke run)
    nproc: int = 1  # processes, one per device; more than 1 runs data-parallel under torchrun


def resolve_device(name: str):
    """auto picks CUDA when present. Asking for CUDA on a machine without it is an error."""
    import torch

    from neuroflow.errors import NeuroflowError

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise NeuroflowError(
            "device 'cuda' was asked for but CUDA is not available; use cpu or auto"
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


GAN_LOSSES = ("bce", "wgan-gp")


@dataclass(frozen=True)
class GANTrainConfig:
    loss: str = "bce"  # non-saturating GAN loss; wgan-gp is the remedy for mode collapse
    epochs: int = 50  # about 2,000 generator steps on the 1,259 default digits
    batch_size: int = 32  # twice the steps of 64 per epoch, at the same cost: FID 69 vs 98
    lr: float = 2e-4  # Adam with betas (beta1, 0.999), as Radford et al.
    beta1: float = 0.5
    n_critic: int = 5  # critic steps per generator step, wgan-gp only
    seed: int = 0
    device: str = "auto"
    max_batches: int = 0  # batches per epoch; 0 = all
    nproc: int = 1  # processes, one per device; more than 1 runs data-parallel under torchrun
