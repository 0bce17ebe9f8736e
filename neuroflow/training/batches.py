"""What both training loops read batches from: a prepared split, whole on the device or
streamed from its shards, and each epoch's order over it.

In memory, a split is one uint8 tensor on the device and a batch is an index into it. Streamed,
a batch is gathered from the shards on a reader thread a few batches ahead (see
neuroflow.data.shards.ShardedImages.batches), pinned when the device is a GPU and copied
without blocking. Either way the order is epoch_order's over the same shards, so both paths
give the same batches, and the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from neuroflow.data.shards import ShardedImages, epoch_order, window_of


class Streamed:
    """A split's images read from their shards and moved to `device` a batch at a time; it
    indexes like the tensor it stands for."""

    def __init__(self, images: ShardedImages, device: torch.device):
        self.images, self.device = images, device
        self.shape = images.shape

    def __len__(self) -> int:
        return len(self.images)

    def to_device(self, rows: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(rows)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return self.to_device(self.images[index])

    def batches(self, chunks: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        for rows in self.images.batches([chunk.numpy() for chunk in chunks]):
            yield self.to_device(rows)


@dataclass
class Split:
    """One split for a loop: images (a tensor on the device, or Streamed), labels (int64 on
    the device), and the shards the images came in: how many each holds, and how many are
    shuffled together (see neuroflow.data.shards.epoch_order)."""

    images: torch.Tensor | Streamed
    labels: torch.Tensor
    counts: tuple[int, ...] = ()  # () : one shard
    window: int = 1

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):  # unpacks as (images, labels), the pair it stands for
        return iter((self.images, self.labels))

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """This epoch's order, drawn from `generator`: one permutation of the whole split when
        it is no larger than a shuffle window."""
        return epoch_order(generator, self.counts or (len(self),), self.window)

    def batches(self, chunks: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The images at each chunk of indices (on the CPU), on the device."""
        if isinstance(self.images, Streamed):
            yield from self.images.batches(chunks)
            return
        for chunk in chunks:
            yield self.images[chunk.to(self.images.device)]


def to_device(
    images, labels: np.ndarray, device, shards: Sequence = (), shuffle_mb: float = 0
) -> Split:
    """A split for the loops on `device`: (N, H, W[, C]) uint8 images stay uint8 (4x smaller
    than float), whole when they are an array and streamed when they are ShardedImages;
    labels become int64. `shards` (neuroflow.data.shards.Shard) are those the images were
    written in, shuffled `shuffle_mb` MiB at a time."""
    device = torch.device(device)
    labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    if isinstance(images, ShardedImages):
        held = Streamed(images, device)
    else:
        held = torch.from_numpy(np.asarray(images)).to(device)
    counts = tuple(s.count for s in shards)
    window = window_of(shards, shuffle_mb) if shards and shuffle_mb else max(len(counts), 1)
    return Split(held, labels, counts, window)


def splits_of(prepared, device, shuffle_mb: float, names=("train", "val", "test")) -> dict:
    """The named splits of a Prepared (neuroflow.data.prepared) for the loops on `device`."""
    return {
        name: to_device(
            prepared.images[name], prepared.labels[name], device, prepared.shards(name), shuffle_mb
        )
        for name in names
    }
