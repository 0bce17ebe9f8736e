"""The device and the seed, set once before training."""

from __future__ import annotations

import random


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
