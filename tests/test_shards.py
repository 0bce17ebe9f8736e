"""Prepared splits in shards: written a shard at a time, read in place or through a bounded
cache, each epoch's order a window of shards at a time, and training that streams them giving
the numbers of training on the whole split in memory."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import python_env, synthetic_digits, using_store
from neuroflow.data import shards
from neuroflow.data.idx import write_idx
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
    mask = np.arange(len(whole)) % 7 == 3
    np.testing.assert_array_equal(streamed[mask], whole[mask])
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
    monkeypatch.setattr(shards, "local_folder", lambda uri: None)
    fetched = []
    download = shards.download_file

    def counted(uri: str, dst: str) -> str:
        fetched.append(Path(uri).name)
        return download(uri, dst)

    monkeypatch.setattr(shards, "download_file", counted)
    cache = ShardCache(tmp_path / "cache", limit=1 << 30)
    prepared = open_prepared(str(sharded), stream=True, cache=cache)
    assert Location(str(sharded), cache).folder is None
    assert "train-images-00000.npy" not in fetched  # opened: metadata, labels, hashes only
    np.testing.assert_array_equal(prepared.images["train"][:3], expected)
    assert fetched.count("train-images-00000.npy") == 1


@pytest.mark.slow
def test_training_from_a_server_streams_its_shards_through_a_bounded_cache(server, tmp_path):
    """A real `mlflow server` serving the artifacts: train_cnn with loading=stream trains on
    its first batch once a window of shards (2, and at most 1 the reader fetched ahead) of the
    9 is in, not the split, and the cache on disk never holds more than cache_mb."""
    import mlflow

    from neuroflow.jobs.preprocess import preprocess
    from neuroflow.jobs.train_classifier import train_classifier

    images, labels = synthetic_digits(500, size=SIDE, seed=2)
    folder = tmp_path / "idx"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", images)
    write_idx(folder / "train-labels-idx1-ubyte", labels)
    cache = tmp_path / "cache"
    limit_mb = 3 * TINY  # three shards on disk at most
    fetched, sizes, at_first_batch = [], [], []
    download, read_batches = shards.download_file, shards.ShardedImages.batches

    def counted(uri: str, dst: str) -> str:
        sizes.append(sum(p.stat().st_size for p in cache.glob("*.npy")))
        fetched.append(Path(uri).name)
        return download(uri, dst)

    def watched(self, chunks):
        for number, batch in enumerate(read_batches(self, chunks)):
            if number == 0 and self.shards[0].file.startswith("train"):
                at_first_batch.append([f for f in fetched if f.startswith("train-images")])
            yield batch

    with pytest.MonkeyPatch.context() as patch, using_store(tmp_path, server):
        patch.setattr(shards, "download_file", counted)
        patch.setattr(shards.ShardedImages, "batches", watched)
        experiment = mlflow.MlflowClient().create_experiment("streamed from a server")
        with mlflow.start_run(experiment_id=experiment):
            config = PrepareConfig(
                dataset="idx", data_dir=str(folder), image_size=SIDE, shard_mb=TINY
            )
            data = preprocess(config)
        with mlflow.start_run(experiment_id=experiment) as run:
            train = TrainConfig(
                epochs=1,
                batch_size=16,
                device="cpu",
                loading="stream",
                shuffle_mb=2.5 * TINY,
                cache_dir=str(cache),
                cache_mb=limit_mb,
            )
            train_classifier("cnn", CNNConfig(channels=(4, 8), hidden=16), train, data.uri)
        accuracy = mlflow.get_run(run.info.run_id).data.metrics["test_accuracy"]
        train_count = mlflow.get_run(data.run_id).data.metrics["train_count"]
        behind_server = mlflow_artifacts(data.uri)
    assert behind_server
    in_train = {f for f in fetched if f.startswith("train-images")}
    assert len(in_train) == -(-train_count // PER_SHARD) > 4  # every shard, each fetched once
    assert len([f for f in fetched if f.startswith("train-images")]) == len(in_train)
    # a window (2) and the one the reader fetches ahead: the first batch did not wait for all
    assert len(at_first_batch[0]) <= 3
    assert max(sizes) <= limit_mb * (1 << 20)
    assert 0 <= accuracy <= 1


def mlflow_artifacts(uri: str) -> bool:
    """Whether the run's artifacts live behind the server (mlflow-artifacts:), not on disk."""
    from mlflow.tracking.artifact_utils import get_artifact_uri

    run_id = uri.split("/")[1]
    return get_artifact_uri(run_id, "prepared").startswith("mlflow-artifacts:")


CAPPED = """
import sys
from pathlib import Path
from neuroflow.data.prepared import load_prepared
from neuroflow.families import CNNConfig
from neuroflow.models.build import build_classifier, for_data
from neuroflow.settings import TrainConfig
from neuroflow.training.batches import splits_of
from neuroflow.training.classifier import fit
from neuroflow.training.device import seed_everything
seed_everything(0)
prepared = load_prepared(Path(sys.argv[1]), mmap=sys.argv[2] == "stream")
splits = splits_of(prepared, "cpu", shuffle_mb=16)
model = build_classifier("cnn", CNNConfig(channels=(4, 8), hidden=16), **for_data(prepared))
config = TrainConfig(epochs=1, batch_size=64, max_batches=40, device="cpu", patience=0)
print(fit(model, splits["train"], splits["val"], config).history[-1]["train_loss"])
"""


def peak_data(command: list[str], limit: int = 0) -> tuple[subprocess.CompletedProcess, int]:
    """Run `command` with its data segment (RLIMIT_DATA: heap and private mappings) capped at
    `limit` bytes (0: not), and return it with the largest VmData seen while it ran."""
    import resource
    import threading

    def cap() -> None:
        if limit:
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    process = subprocess.Popen(
        command,
        preexec_fn=cap,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=python_env(),
    )
    peak = [0]

    def watch() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            with contextlib.suppress(OSError, ValueError, StopIteration):  # it has exited
                lines = status.read_text().splitlines()
                line = next(text for text in lines if text.startswith("VmData"))
                peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = process.communicate(timeout=600)
    watcher.join()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), peak[0]


@pytest.mark.slow
def test_training_streams_under_a_memory_cap_far_below_the_data(tmp_path):
    """Over 400 MiB of images, in 16 MiB shards. Streamed, training's data segment peaks some
    MiB above the bare process; capped 100 MiB above that peak, it still trains, while
    reading the same data whole under the same cap fails."""
    images, labels = synthetic_digits(1000, size=28, seed=4)
    many = np.tile(images, (540, 1, 1)), np.tile(labels, 540)  # 540,000 images: 423 MB
    source = Source("synthetic", "memory://s", [Part(*many, "pool")], DIGIT_CLASSES)
    config = PrepareConfig(
        image_size=28, mnist_framing=False, val_fraction=0.01, test_fraction=0.01
    )
    meta = prepare(source, tmp_path / "prepared", config)
    data_bytes = sum(s["bytes"] for split in meta["splits"].values() for s in split["shards"])
    assert data_bytes > 400 * (1 << 20)
    command = [sys.executable, "-c", CAPPED, str(tmp_path / "prepared")]
    free, streamed_peak = peak_data([*command, "stream"])
    assert free.returncode == 0, free.stderr
    assert streamed_peak > 0
    limit = streamed_peak + 100 * (1 << 20)
    capped, _ = peak_data([*command, "stream"], limit)
    assert capped.returncode == 0, capped.stderr[-2000:]
    assert float(capped.stdout.split()[-1]) == float(free.stdout.split()[-1])  # same numbers
    whole, _ = peak_data([*command, "memory"], limit)
    assert whole.returncode != 0 and "MemoryError" in whole.stderr, whole.stderr[-2000:]
