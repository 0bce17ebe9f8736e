"""Data parallelism under torchrun: one process per device, only rank 0 talks to MLflow.

A trainer started with nproc > 1 re-executes itself under `torch.distributed.run` (torchrun),
which sets RANK, WORLD_SIZE and LOCAL_RANK. Each rank trains on its own shard of every epoch
through DistributedDataParallel; metrics are reduced across ranks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from neuroflow.training.device import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int
    size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @classmethod
    def single(cls, device: str) -> Ranks:
        """One process on its own, even inside a torchrun group."""
        return cls(0, 1, resolve_device(device))

    @classmethod
    def setup(cls, device: str) -> Ranks:
        """This process's place: a single process, or one rank of a torchrun group (joined
        here, with NCCL on CUDA and gloo on the CPU)."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        chosen = resolve_device(device)
        if size == 1:
            return cls(0, 1, chosen)
        import torch.distributed as dist

        if chosen.type == "cuda":
            chosen = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(chosen)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
        return cls(dist.get_rank(), size, chosen)

    def steps(self, count: int, batch_size: int, whole: bool = False) -> int:
        """How many batches `batches` makes of `count` images."""
        full, rest = divmod(count, batch_size)
        if full == 0:  # one batch, however small
            return int(count > 0)
        return full + (rest > 0 and rest >= (batch_size if whole else self.size))

    def batches(
        self, order: torch.Tensor, batch_size: int, steps: int, whole: bool = False
    ) -> list[torch.Tensor]:
        """This rank's part of each of the first `steps` batches of `batch_size` images over all
        ranks in `order`: every rank takes as many batches, and together they take each image
        of the epoch once. A last batch too small to give every rank an image joins the one
        before; with `whole`, a last batch short of batch_size is left out instead (a GAN's
        BatchNorm needs whole batches). A single batch is kept, however small."""
        chunks = list(order.split(batch_size))
        if len(chunks) > 1 and len(chunks[-1]) < (batch_size if whole else self.size):
            last = chunks.pop()
            if not whole:
                chunks[-1] = torch.cat([chunks[-1], last])
        return [chunk[self.rank :: self.size] for chunk in chunks[:steps]]

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.parallel:
            import torch.distributed as dist

            dist.all_reduce(value)
        return value

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around `module` when there are several ranks."""
        if not self.parallel:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def from_main(self, compute: Callable[[], T]) -> T:
        """`compute()` on rank 0, its result handed to every rank."""
        if not self.parallel:
            return compute()
        import torch.distributed as dist

        box = [compute() if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]
