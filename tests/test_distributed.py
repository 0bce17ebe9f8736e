"""Data-parallel training's share of each epoch: every rank takes as many batches, and
together the ranks train on each image of the epoch once, in memory or streamed from shards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from helpers import free_port, synthetic_digits
from neuroflow.data.prepared import load_prepared, prepare
from neuroflow.data.sources import DIGIT_CLASSES, Part, Source
from neuroflow.families import MLPConfig
from neuroflow.models.build import build_classifier
from neuroflow.settings import PrepareConfig, TrainConfig
from neuroflow.training import batches as batches_module
from neuroflow.training.batches import splits_of
from neuroflow.training.classifier import fit
from neuroflow.training.distributed import Ranks


@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [5, 127, 128, 129, 130, 300, 385])
def test_the_ranks_share_each_batch_and_take_every_image_once(size, count):
    order = torch.randperm(count, generator=torch.Generator().manual_seed(count))
    shares = [
        Ranks(rank, size, torch.device("cpu")).batches(order, 32, 10**6) for rank in range(size)
    ]
    steps = Ranks(0, size, torch.device("cpu")).steps(count, 32)
    assert all(len(share) == steps for share in shares)  # DDP: every rank as many steps
    assert all(len(batch) > 0 for share in shares for batch in share)
    taken = torch.cat([batch for share in shares for batch in share])
    assert sorted(taken.tolist()) == list(range(count))  # each image once
    if size == 1:
        assert [b.tolist() for b in shares[0]] == [b.tolist() for b in order.split(32)]


def test_whole_batches_leave_out_a_short_last_one_and_keep_a_single_one():
    ranks = Ranks(0, 2, torch.device("cpu"))
    assert [len(b) for b in ranks.batches(torch.arange(80), 32, 10, whole=True)] == [16, 16]
    assert ranks.steps(80, 32, whole=True) == 2
    assert [len(b) for b in ranks.batches(torch.arange(20), 32, 10, whole=True)] == [10]
    assert ranks.steps(20, 32, whole=True) == 1
    alone = Ranks(0, 1, torch.device("cpu"))
    assert [b.tolist() for b in alone.batches(torch.arange(1), 32, 10)] == [[0]]
    assert alone.steps(1, 32) == 1


def train_rank(rank: int, folder: str, out: str, port: int) -> None:
    """One of two gloo ranks: train 2 epochs on the streamed train split, writing the images
    each epoch gave this rank to out/<rank>.json."""
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    ranks = Ranks.setup("cpu")
    prepared = load_prepared(Path(folder), mmap=True)
    splits = splits_of(prepared, ranks.device, shuffle_mb=0.02)
    seen: list[list[int]] = []
    streamed = batches_module.Split.batches

    def recorded(self, chunks):
        if self is splits["train"]:
            seen.append([i for chunk in chunks for i in chunk.tolist()])
        return streamed(self, chunks)

    batches_module.Split.batches = recorded
    torch.manual_seed(0)
    model = build_classifier("mlp", MLPConfig(hidden=(16,)), (12, 12), 0.1, 0.3, DIGIT_CLASSES)
    config = TrainConfig(epochs=2, batch_size=32, device="cpu", patience=0)
    fit(model, splits["train"], splits["val"], config, ranks=ranks)
    Path(out, f"{rank}.json").write_text(json.dumps(seen))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_see_each_streamed_image_exactly_once_an_epoch(tmp_path):
    """Two processes under gloo, the train split (an odd 281 images in shards of 40) read a
    shard at a time: each epoch, the two ranks' images together are the split, once each."""
    images, labels = synthetic_digits(401, size=12, seed=3)
    source = Source("synthetic", "memory://s", [Part(images, labels, "pool")], DIGIT_CLASSES)
    config = PrepareConfig(image_size=12, mnist_framing=False, shard_mb=40 * 144 / (1 << 20))
    meta = prepare(source, tmp_path / "prepared", config)
    count = meta["splits"]["train"]["count"]
    assert count % 2 == 1 and len(meta["splits"]["train"]["shards"]) > 2
    torch.multiprocessing.spawn(
        train_rank, args=(str(tmp_path / "prepared"), str(tmp_path), free_port()), nprocs=2
    )
    epochs = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert len(epochs[0]) == len(epochs[1]) == 2
    for first, second in zip(*epochs, strict=True):
        assert not set(first) & set(second)
        assert sorted(first + second) == list(range(count))
    assert epochs[0][0] != epochs[0][1]  # each epoch its own order
