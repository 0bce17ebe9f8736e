"""The shard reader measured against streaming libraries, on this project's workload: the
MNIST test split tiled to 100,000 images and prepared (90,000 to train), then 400 shuffled
batches of 128, read alone and fed to the CNN's training step (the same model, optimiser and
allocator), images/s. Each library reads the same images written in its own format: webdataset
as tar shards of .npy samples, litdata as its optimised chunks of 16 MB, each with no worker
and with one (this machine has 2 cores).

    pip install webdataset litdata   # not dependencies of the project
    python -m benchmarks.loaders [--mnist-t10k DIR] [--json loaders-results.json]

A library that is not installed is left out of the table.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from benchmarks.__main__ import MNIST_OPTION, mnist_folder, source_images

IMAGES, BATCHES, BATCH = 100_000, 400, 128
PER_SHARD = 21_399  # images in this project's 16 MiB shards at 28 x 28


def prepared_here(folder: Path, mnist: Path | None):
    from neuroflow.data.prepared import load_prepared, prepare
    from neuroflow.data.sources import Part, Source
    from neuroflow.settings import PrepareConfig

    images, labels, _ = source_images(mnist)
    tiles = -(-IMAGES // len(labels))
    part = Part(np.tile(images, (tiles, 1, 1))[:IMAGES], np.tile(labels, tiles)[:IMAGES], "pool")
    source = Source("idx", "memory://tiled", [part], [str(c) for c in range(10)])
    prepare(source, folder, PrepareConfig(dataset="idx", val_fraction=0.05, test_fraction=0.05))
    return load_prepared(folder, mmap=True)


def ours(prepared):
    import torch

    from neuroflow.training.batches import splits_of

    train = splits_of(prepared, torch.device("cpu"), 64, ("train",))["train"]
    labels = np.asarray(prepared.labels["train"], dtype=np.int64)
    chunks = list(train.order(torch.Generator().manual_seed(0)).split(BATCH))
    for chunk, images in zip(chunks, train.batches(chunks), strict=False):
        yield images, torch.from_numpy(labels[chunk.numpy()])


def write_webdataset(images: np.ndarray, labels: np.ndarray, folder: Path) -> list[str]:
    folder.mkdir()
    for start in range(0, len(labels), PER_SHARD):
        with tarfile.open(folder / f"shard-{start // PER_SHARD:05d}.tar", "w") as tar:
            for index in range(start, min(start + PER_SHARD, len(labels))):
                stream = io.BytesIO()
                np.save(stream, images[index])
                label = str(int(labels[index])).encode()
                for name, payload in (("npy", stream.getvalue()), ("cls", label)):
                    info = tarfile.TarInfo(f"{index:08d}.{name}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return sorted(str(path) for path in folder.glob("*.tar"))


def webdataset(urls: list[str], workers: int):
    import torch
    import webdataset as wds

    pipeline = wds.WebDataset(urls, shardshuffle=len(urls), seed=0).shuffle(5000).decode()
    batches = pipeline.to_tuple("npy", "cls").batched(BATCH)
    for images, labels in wds.WebLoader(batches, batch_size=None, num_workers=workers):
        yield torch.as_tensor(np.asarray(images)), torch.as_tensor(np.asarray(labels))


class Samples:
    """litdata's optimize() calls this per index, in worker processes."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __call__(self, index: int) -> dict:
        return {"image": self.images[index], "label": int(self.labels[index])}


def litdata(folder: str, workers: int):
    import litdata as ld
    import torch

    dataset = ld.StreamingDataset(folder, shuffle=True, seed=0)
    for batch in ld.StreamingDataLoader(dataset, batch_size=BATCH, num_workers=workers):
        yield torch.as_tensor(batch["image"]), torch.as_tensor(batch["label"])


def measure(prepared, batches, train: bool) -> int:
    """Images/s over BATCHES batches after the first (start-up is not throughput)."""
    import torch.nn.functional as F

    from neuroflow.families import CNNConfig
    from neuroflow.models.build import build_classifier, for_data
    from neuroflow.training.device import seed_everything, steady_allocations
    from neuroflow.training.optim import Optimizer

    seed_everything(0)
    model = build_classifier("cnn", CNNConfig(), **for_data(prepared))
    optimizer = Optimizer(model.parameters(), "adamw", 3e-3, 1e-4)
    steady_allocations()
    model.train()
    next(batches)
    started, seen = time.perf_counter(), 0
    for step, (images, labels) in enumerate(batches, start=1):
        if train:
            loss = F.cross_entropy(model.logits(images), labels.long())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seen += len(labels)
        if step == BATCHES:
            break
    return round(seen / (time.perf_counter() - started))


@click.command()
@MNIST_OPTION
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def main(mnist_t10k: Path | None, json_path: str | None) -> None:
    import importlib.util

    mnist = mnist_folder(mnist_t10k)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepared = prepared_here(folder / "prepared", mnist)
        readers = {"neuroflow shards": lambda: ours(prepared)}
        whole = np.asarray(prepared.images["train"]), np.asarray(prepared.labels["train"])
        if importlib.util.find_spec("webdataset"):
            urls = write_webdataset(*whole, folder / "wds")
            for workers in (0, 1):
                readers[f"webdataset, {workers} workers"] = lambda w=workers: webdataset(urls, w)
        if importlib.util.find_spec("litdata"):
            import litdata as ld

            out = str(folder / "litdata")
            ld.optimize(
                fn=Samples(*whole),
                inputs=list(range(len(whole[1]))),
                output_dir=out,
                chunk_bytes="16MB",
                num_workers=2,
            )
            for workers in (0, 1):
                readers[f"litdata, {workers} workers"] = lambda w=workers: litdata(out, w)
        for name, reader in readers.items():
            row = {"reader": name, "alone": measure(prepared, reader(), train=False)}
            row["training"] = measure(prepared, reader(), train=True)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"{'reader':28}{'alone, images/s':>18}{'training, images/s':>20}")
    for row in rows:
        print(f"{row['reader']:28}{row['alone']:>18,}{row['training']:>20,}")
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
