"""Training state saved at every epoch end, so a killed run can go on where it stopped.

A checkpoint holds everything the next epoch depends on: the weights, the optimisers (whose
step count places the schedule), every random number generator, the epoch, the metric history
and, for a classifier, the best weights so far. Restoring it and training on gives the same
numbers as never having stopped (on a CPU, with the same seed). It is plain tensors, numbers
and strings, so it loads with weights_only=True and unpickles no code.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neuroflow.errors import DataError

FORMAT = 3  # bumped when the keys below, or what they hold, change
KEYS = {  # what each trainer saves, named by the checkpoint's "trainer"
    "classifier": ("epoch", "model", "optimizer", "rng", "history", "best"),
    "gan": ("epoch", "generator", "critic", "g_optimizer", "d_optimizer", "rng", "history"),
}


def rng_state(generator: torch.Generator) -> dict:
    """Every generator training draws from: torch's (dropout, init), the shuffling order's,
    numpy's and Python's, and the current CUDA device's when there is one."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "shuffle": generator.get_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():  # the current device's: a resume may see other devices
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["shuffle"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def copied(state):
    """`state` with every tensor copied to the CPU: a snapshot that training, going on, does not
    change (state_dict() hands out the live weights), to be written from another thread."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: copied(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(copied(value) for value in state)
    return state


def save(state: dict, path: Path) -> Path:
    """Write `state`, which names its "trainer" (a key of KEYS), to `path`."""
    torch.save({"format": FORMAT, **state}, path)
    return path


def load(path: Path, source: str) -> dict:
    """The checkpoint at `path` (downloaded from `source`, named in errors), on the CPU."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file fails in many ways
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(
            f"checkpoint {source} cannot be read ({first}); expected a file saved by training"
        ) from None
    state = state if isinstance(state, dict) else {}
    found = state.get("format", FORMAT)
    if not isinstance(found, int) or found != FORMAT:
        raise DataError(
            f"checkpoint {source} has format {found!r}; expected format {FORMAT}, saved by "
            "this version of training"
        )
    trainer = state.get("trainer")
    if trainer is not None and not (isinstance(trainer, str) and trainer in KEYS):
        raise DataError(
            f"checkpoint {source} was saved by trainer {trainer!r}; expected one of {list(KEYS)}"
        )
    missing = [key for key in ("format", "trainer", *KEYS.get(trainer, ())) if key not in state]
    if missing:
        raise DataError(f"checkpoint {source} lacks {missing}; expected a file saved by training")
    return state


@dataclass
class Checkpoints:
    """What a loop is given: a state to start from (None: from scratch), and where to send the
    state after each epoch (None: nowhere)."""

    start: dict | None = None
    save: Callable[[dict], None] | None = None


class Snapshot:
    """The resume and snapshot scaffold both loops share. `parts` are what the state dicts
    come from (networks, optimisers, a schedule), named as KEYS[trainer] names them, and
    `shuffle` draws each epoch's order."""

    def __init__(
        self,
        trainer: str,
        parts: dict,
        shuffle: torch.Generator,
        checkpoints: Checkpoints | None,
        main: bool = True,
    ):
        self.trainer, self.parts, self.shuffle, self.main = trainer, parts, shuffle, main
        self.checkpoints = checkpoints or Checkpoints()

    def restore(self) -> tuple[list[dict[str, float]], int, dict]:
        """Load the start state, if there is one, into the parts and the generators: (the
        history so far, the epochs done, the whole state, for what else the loop saved)."""
        state = self.checkpoints.start
        if state is None:
            return [], 0, {}
        for key, part in self.parts.items():
            part.load_state_dict(state[key])
        restore_rng(state["rng"], self.shuffle)
        return list(state["history"]), state["epoch"], state

    def save(self, epoch: int, history: list[dict[str, float]], **extra) -> None:
        """Hand the state after `epoch`, with what else the loop keeps (`extra`), to
        checkpoints.save; on rank 0 only."""
        if not (self.checkpoints.save and self.main):
            return
        parts = {key: part.state_dict() for key, part in self.parts.items()}
        state = {"trainer": self.trainer, "epoch": epoch, **parts, "rng": rng_state(self.shuffle)}
        self.checkpoints.save({**state, "history": history, **extra})
