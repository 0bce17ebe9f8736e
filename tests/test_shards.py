"""Prepared splits in shards: written a shard at a time, read in place or through a bounded
cache, each epoch's order a window of shards at a time, and training that streams them giving
the numbers of training on the whole split in memory."""

from __future__ import annotations

import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import synthetic_digits
from neuroflow.data.prepared import SPLITS, load_prepared, open_for, open_prepared, prepare
from neuroflow.data.shards import Location, Shard, ShardCache, ShardedImages, epoch_order
from neuroflow.data.sources import DIGIT_CLASSES, Part, Source
from neuroflow.errors import DataError
from neuroflow.families import CNNConfig
from neuroflow.models.build import build_classifier
from neuroflow.settings import PrepareConfig, TrainConfig
from neuroflow.training.batches import to_device
from neuroflow.training.classifier import fit
from neuroflow.training.device import seed_everything

SIDE = 12
PER_SHARD = 40  # images of SIDE x SIDE in a shard of TINY MiB
TINY = PER_SHARD * SIDE * SIDE / (1 << 20)


def source(count: int = 400) -> Source:
    images, labels = synthetic_digits(count, size=SIDE, seed=1)
    return Source("synthetic", "memory://synthetic", [Part(images, labels, "pool")], DIGIT_CLASSES)


def prepared_in(folder: Path, shard_mb: float = TINY, count: int = 400) -> dict:
    config = PrepareConfig(image_size=SIDE, mnist_framing=False, shard_mb=shard_mb)
    return prepare(source(count), folder, config)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sharded")
    prepared_in(folder)
    return folder


def test_each_split_is_cut_into_shards_and_its_digest_does_not_depend_on_them(sharded, tmp_path):
    meta = load_prepared(sharded).meta
    train = meta["splits"]["train"]
    assert [s["count"] for s in train["shards"]] == [40] * (train["count"] // 40) + (
        [train["count"] % 40] if train["count"] % 40 else []
    )
    assert len(train["shards"]) > 3
    whole = prepared_in(tmp_path, shard_mb=16)  # one shard per split
    assert all(len(whole["splits"][s]["shards"]) == 1 for s in SPLITS)
    assert whole["digest"] == meta["digest"]
    for split in SPLITS:
        assert whole["splits"][split]["sha256"] == meta["splits"][split]["sha256"]
    one, many = load_prepared(tmp_path), load_prepared(sharded)
    for split in SPLITS:
        np.testing.assert_array_equal(one.images[split], many.images[split])


def test_preprocess_hands_over_each_file_once_written_and_never_holds_a_split(tmp_path):
    out, away = tmp_path / "out", tmp_path / "away"
    away.mkdir()
    held = []

    def publish(path: Path) -> None:
        held.append(sorted(p.name for p in out.iterdir()))
        shutil.move(path, away / path.name)

    meta = prepared_in(out, count=400)  # the same, published nowhere
    shutil.rmtree(out)
    config = PrepareConfig(image_size=SIDE, mnist_framing=False, shard_mb=TINY)
    assert prepare(source(400), out, config, publish=publish) == meta
    assert all(len(files) == 1 for files in held), held  # only the file just written
    assert held[-1] == ["metadata.json"]
    assert load_prepared(away).digest == meta["digest"]


def test_an_epoch_takes_the_shards_a_window_at_a_time_and_shuffles_within_it():
    counts = [40, 40, 40, 40, 40, 15]
    starts = np.cumsum([0, *counts])
    order = epoch_order(torch.Generator().manual_seed(0), counts, window=2).numpy()
    assert sorted(order.tolist()) == list(range(sum(counts)))  # each image once
    owner = np.searchsorted(starts, order, side="right") - 1
    sizes = []
    position = 0
    while position < len(order):  # each window: the images of two shards, mixed
        shards = set()
        while position < len(order) and (len(shards) < 2 or owner[position] in shards):
            shards.add(owner[position])
            position += 1
        sizes.append(sum(counts[s] for s in shards))
        window = owner[position - sizes[-1] : position]
        assert len(set(window[: len(window) // 2])) == len(shards)  # shuffled, not in turn
    assert len(sizes) == 3
    again = epoch_order(torch.Generator().manual_seed(0), counts, window=2).numpy()
    other = epoch_order(torch.Generator().manual_seed(1), counts, window=2).numpy()
    assert (order == again).all() and not (order == other).all()


def test_a_split_no_larger_than_a_window_is_one_permutation():
    order = epoch_order(torch.Generator().manual_seed(3), [40, 40, 7], window=3)
    assert torch.equal(order, torch.randperm(87, generator=torch.Generator().manual_seed(3)))


def test_sharded_images_index_like_the_array_they_stand_for(sharded):
    whole = load_prepared(sharded).images["train"]
    streamed = load_prepared(sharded, mmap=True).images["train"]
    assert isinstance(streamed, ShardedImages)
    assert streamed.shape == whole.shape and len(streamed) == len(whole)
    rows = np.random.default_rng(0).permutation(len(whole))[:50]
    np.testing.assert_array_equal(streamed[rows], whole[rows])
    np.testing.assert_array_equal(streamed[5:97], whole[5:97])
    np.testing.assert_array_equal(streamed[-1], whole[-1])
    np.testing.assert_array_equal(np.asarray(streamed), whole)
    with pytest.raises(IndexError):
        streamed[[len(whole)]]


def test_streamed_batches_read_each_shard_once_and_hold_one_window(sharded, monkeypatch):
    images = load_prepared(sharded, mmap=True).images["train"]
    whole = load_prepared(sharded).images["train"]
    reads, alive, most = [], [0], [0]
    read = ShardedImages.shard

    def gone() -> None:
        alive[0] -= 1

    def counted(self, number):
        reads.append(number)
        array = read(self, number)
        alive[0] += 1
        weakref.finalize(array, gone)
        most[0] = max(most[0], alive[0])
        return array

    monkeypatch.setattr(ShardedImages, "shard", counted)
    order = epoch_order(torch.Generator().manual_seed(0), images.counts, window=2)
    chunks = list(order.split(16))
    for chunk, batch in zip(chunks, images.batches(chunks), strict=True):
        np.testing.assert_array_equal(batch, whole[chunk.numpy()])
    assert sorted(reads) == list(range(len(images.shards)))
    # a window's two shards, and where a batch straddles two windows, the next window's too
    assert most[0] <= 2 * 2


def test_training_on_streamed_shards_gives_the_numbers_of_training_in_memory(sharded):
    """Several windows an epoch: the same batches in the same order, so the same curves and
    the same weights, bit for bit."""
    config = TrainConfig(epochs=2, batch_size=16, device="cpu", patience=0)
    results = {}
    for mode in (False, True):
        prepared = load_prepared(sharded, mmap=mode)
        splits = {
            s: to_device(
                prepared.images[s], prepared.labels[s], "cpu", prepared.shards(s), TINY * 2.5
            )
            for s in ("train", "val")
        }
        assert splits["train"].window == 2 and len(splits["train"].counts) > 2
        seed_everything(0)
        model = build_classifier(
            "cnn", CNNConfig(channels=(4, 8), hidden=16), (SIDE, SIDE), 0.1, 0.3, DIGIT_CLASSES
        )
        result = fit(model, splits["train"], splits["val"], config)
        results[mode] = (result.history, model.state_dict())
    (memory, memory_weights), (streamed, streamed_weights) = results[False], results[True]
    assert memory == streamed
    for key, value in memory_weights.items():
        assert torch.equal(streamed_weights[key], value), key


def test_a_shard_changed_after_preprocess_stops_the_stream_with_one_line(sharded, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(sharded, folder)
    images = load_prepared(folder, mmap=True).images["train"]
    path = folder / "train-images-00002.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    chunks = list(torch.arange(len(images)).split(32))
    with pytest.raises(
        DataError, match="train-images-00002.npy does not match its recorded sha256"
    ):
        for _ in images.batches(chunks):
            pass


@pytest.mark.parametrize(
    ("loading", "kind"), [("memory", np.ndarray), ("stream", ShardedImages), ("auto", np.ndarray)]
)
def test_loading_reads_whole_or_a_shard_at_a_time(sharded, loading, kind):
    prepared = open_for(str(sharded), TrainConfig(loading=loading))
    assert all(isinstance(prepared.images[s], kind) for s in SPLITS)


def test_the_cache_fetches_checks_and_keeps_within_its_limit(sharded, tmp_path):
    """A remote store's files through the cache: named by their sha256, the least recently
    used removed to make room, a file that does not match its record refused."""
    meta = load_prepared(sharded).meta
    shards = [Shard.from_dict(r) for r in meta["splits"]["train"]["shards"][:4]]
    cache = ShardCache(tmp_path / "cache", limit=int(shards[0].bytes * 2.5))
    for shard in shards:
        data = cache.fetch(str(sharded / shard.file), shard)
        assert data == (sharded / shard.file).read_bytes()
        assert cache.size() <= cache.limit
    kept = sorted(p.name for p in cache.folder.iterdir())
    assert kept == sorted(f"{s.sha256}.npy" for s in shards[2:])  # the two most recent
    wrong = Shard(shards[0].file, shards[1].sha256, shards[0].bytes, shards[0].count)
    (cache.folder / f"{wrong.sha256}.npy").unlink(missing_ok=True)
    with pytest.raises(DataError, match="does not match its recorded sha256"):
        cache.fetch(str(sharded / wrong.file), wrong)
    assert cache.size() <= cache.limit
    with pytest.raises(DataError, match="more than the shard cache's"):
        ShardCache(tmp_path / "small", limit=10).fetch(str(sharded / shards[0].file), shards[0])


def test_a_remote_store_is_read_through_the_cache(sharded, tmp_path, monkeypatch):
    """A store not on this machine (here: one that says so) is fetched file by file into the
    cache, never downloaded whole."""
    expected = load_prepared(sharded).images["train"][:3]
    monkeypatch.setattr("neuroflow.data.shards.local_folder", lambda uri: None)
    fetched = []
    real = "neuroflow.data.shards.download_file"
    download = __import__("neuroflow.data.shards", fromlist=["x"]).download_file

    def counted(uri: str, dst: str) -> str:
        fetched.append(Path(uri).name)
        return download(uri, dst)

    monkeypatch.setattr(real, counted)
    cache = ShardCache(tmp_path / "cache", limit=1 << 30)
    prepared = open_prepared(str(sharded), stream=True, cache=cache)
    assert Location(str(sharded), cache).folder is None
    assert "train-images-00000.npy" not in fetched  # opened: metadata, labels, hashes only
    np.testing.assert_array_equal(
        prepared.images["train"][:3], load_prepared(sharded).images["train"][:3]
    )
    assert fetched.count("train-images-00000.npy") == 1
