"""The prepared folder: files, metadata, determinism, integrity checks, and real MNIST counts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from helpers import synthetic_digits
from neuroflow.data.prepared import SPLITS, load_prepared, prepare
from neuroflow.data.shards import ShardedImages
from neuroflow.data.sources import DIGIT_CLASSES, Part, Source, load_source
from neuroflow.errors import DataError
from neuroflow.settings import PrepareConfig

KINDS = ("images-00000", "labels", "hashes")
FILES = {f"{s}-{kind}.npy" for s in SPLITS for kind in KINDS} | {"metadata.json"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(path: Path, **extra) -> dict:
    return {"file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size, **extra}


def _source(count: int = 200, official_test: int = 0) -> Source:
    """Synthetic 8x8 digits; with official_test > 0, a second part marked as the test split."""
    parts = [Part(*synthetic_digits(count, size=8, seed=1), "pool")]
    if official_test:
        parts.append(Part(*synthetic_digits(official_test, size=8, seed=2), "test", True))
    return Source("synthetic", "memory://synthetic", parts, DIGIT_CLASSES)


def _config(**overrides) -> PrepareConfig:
    return PrepareConfig(**{"image_size": 8, **overrides})


def test_writes_files_and_metadata(tmp_path: Path):
    config = _config()
    meta = prepare(_source(), tmp_path, config)
    assert {p.name for p in tmp_path.iterdir()} == FILES
    assert json.loads((tmp_path / "metadata.json").read_text()) == meta
    assert meta["classes"] == DIGIT_CLASSES
    assert meta["image_shape"] == [8, 8]
    assert meta["params"] == asdict(config)
    assert not meta["official_test"]
    assert sum(meta["splits"][s]["count"] for s in SPLITS) == 200
    for split in SPLITS:
        shard, labels_file = (
            tmp_path / f"{split}-images-00000.npy",
            tmp_path / f"{split}-labels.npy",
        )
        images, labels = np.load(shard), np.load(labels_file)
        content = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
        assert (
            meta["splits"][split]
            == {
                "count": len(labels),
                "sha256": content,  # the pixels, then the labels: not the files' headers
                "digest": content[:16],
                "class_counts": np.bincount(labels, minlength=10).tolist(),
                "shards": [record(shard, count=len(labels))],
                "labels": record(labels_file),
                "hashes": record(tmp_path / f"{split}-hashes.npy"),
            }
        )


def test_normalization_matches_train_pixels(tmp_path: Path):
    meta = prepare(_source(), tmp_path, _config())
    pixels = load_prepared(tmp_path).images["train"].astype(np.float64) / 255
    assert meta["normalization"]["mean"] == pytest.approx(pixels.mean(), abs=1e-4)
    assert meta["normalization"]["std"] == pytest.approx(pixels.std(), abs=1e-4)


def test_official_test_part_is_the_test_split(tmp_path: Path):
    source = _source(official_test=30)
    meta = prepare(source, tmp_path, _config())
    test_part = source.parts[1]
    assert meta["official_test"]
    assert meta["splits"]["test"]["count"] == 30
    assert meta["splits"]["train"]["count"] + meta["splits"]["val"]["count"] == 200
    prepared = load_prepared(tmp_path)
    np.testing.assert_array_equal(prepared.images["test"], test_part.images)
    np.testing.assert_array_equal(prepared.labels["test"], test_part.labels)


def test_class_counts_cover_every_class_even_when_a_split_lacks_some(tmp_path: Path):
    source = _source(official_test=30)
    source.parts[1].labels[:] = np.arange(30) % 5  # the test part holds classes 0..4 only
    meta = prepare(source, tmp_path, _config())
    assert meta["splits"]["test"]["class_counts"] == [6, 6, 6, 6, 6, 0, 0, 0, 0, 0]


def test_resizes_to_image_size(tmp_path: Path):
    meta = prepare(_source(), tmp_path, _config(image_size=28))
    assert meta["image_shape"] == [28, 28]
    assert meta["native_shape"] == [8, 8]
    prepared = load_prepared(tmp_path)
    for split in SPLITS:
        assert prepared.images[split].shape == (meta["splits"][split]["count"], 28, 28)


def test_digest_depends_on_seed_only(tmp_path: Path):
    first = prepare(_source(), tmp_path / "a", _config(seed=0))
    again = prepare(_source(), tmp_path / "b", _config(seed=0))
    other = prepare(_source(), tmp_path / "c", _config(seed=1))
    assert first["digest"] == again["digest"]
    assert first["splits"] == again["splits"]
    assert other["digest"] != first["digest"]


def test_load_prepared_round_trip(tmp_path: Path):
    meta = prepare(_source(), tmp_path, _config())
    prepared = load_prepared(tmp_path)
    assert prepared.meta == meta
    assert prepared.digest == meta["digest"]
    assert prepared.image_shape == (8, 8)
    for split in SPLITS:
        np.testing.assert_array_equal(
            prepared.images[split], np.load(tmp_path / f"{split}-images-00000.npy")
        )
        np.testing.assert_array_equal(
            prepared.labels[split], np.load(tmp_path / f"{split}-labels.npy")
        )
    streamed = load_prepared(tmp_path, mmap=True).images["train"]
    assert isinstance(streamed, ShardedImages)  # read from disk as it is used
    np.testing.assert_array_equal(streamed[:], prepared.images["train"])


def test_load_prepared_detects_tampering(tmp_path: Path):
    prepare(_source(), tmp_path, _config())
    path = tmp_path / "val-images-00000.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="val-images-00000.npy does not match its recorded sha256"):
        load_prepared(tmp_path)
    streamed = load_prepared(tmp_path, mmap=True).images["val"]  # checked when read
    with pytest.raises(DataError, match="val-images-00000.npy does not match"):
        streamed[:2]


def test_load_prepared_without_metadata(tmp_path: Path):
    prepare(_source(), tmp_path, _config())
    (tmp_path / "metadata.json").unlink()
    with pytest.raises(DataError, match="not a prepared dataset.*metadata.json"):
        load_prepared(tmp_path)


def test_load_prepared_without_a_split_file(tmp_path: Path):
    prepare(_source(), tmp_path, _config())
    (tmp_path / "test-labels.npy").unlink()
    with pytest.raises(DataError, match="missing split file"):
        load_prepared(tmp_path)


def test_real_mnist_t10k_counts(mnist_t10k: Path, tmp_path: Path):
    config = PrepareConfig(
        dataset="idx", data_dir=str(mnist_t10k), val_fraction=0.1, test_fraction=0.2
    )
    meta = prepare(load_source("idx", str(mnist_t10k)), tmp_path, config)
    assert [meta["splits"][s]["count"] for s in SPLITS] == [7000, 1000, 2000]
    assert meta["image_shape"] == [28, 28]
    assert not meta["official_test"]


def test_each_image_keeps_a_hash_of_its_source_pixels_whatever_its_split(tmp_path: Path):
    from neuroflow.data.prepared import image_hashes

    source = _source()
    prepare(source, tmp_path / "one", _config(seed=0))
    prepare(source, tmp_path / "other", _config(seed=1))
    one, other = load_prepared(tmp_path / "one"), load_prepared(tmp_path / "other")
    every = image_hashes(source.parts[0].images)
    for prepared in (one, other):  # the same images, split otherwise
        held = np.concatenate([prepared.hashes[s] for s in SPLITS])
        assert sorted(held.tolist()) == sorted(every.tolist())
    assert set(one.hashes["test"].tolist()) != set(other.hashes["test"].tolist())


def test_changed_hashes_are_refused(tmp_path: Path):
    prepare(_source(), tmp_path, _config())
    hashes = np.load(tmp_path / "val-hashes.npy")
    np.save(tmp_path / "val-hashes.npy", hashes[::-1])
    with pytest.raises(DataError, match="val-hashes.npy does not match its recorded sha256"):
        load_prepared(tmp_path)


def write_format_2(prepared, folder: Path, with_hashes: bool = True) -> None:
    """`prepared` as format 2 wrote it (one images file per split); format 1 without hashes."""
    folder.mkdir()
    meta = {**prepared.meta, "format": 2 if with_hashes else 1, "splits": {}}
    for split in SPLITS:
        files = [folder / f"{split}-images.npy", folder / f"{split}-labels.npy"]
        np.save(files[0], prepared.images[split])
        np.save(files[1], prepared.labels[split])
        digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
        meta["splits"][split] = {
            "count": len(prepared.labels[split]),
            "sha256": digest,
            "digest": digest[:16],
        }
        if with_hashes:
            np.save(folder / f"{split}-hashes.npy", prepared.hashes[split])
            meta["splits"][split]["hashes_sha256"] = sha256(folder / f"{split}-hashes.npy")
    (folder / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("with_hashes", [True, False], ids=["format 2", "format 1"])
def test_a_folder_of_an_earlier_format_reads_whole(tmp_path: Path, with_hashes):
    prepare(_source(), tmp_path / "now", _config())
    now = load_prepared(tmp_path / "now")
    write_format_2(now, tmp_path / "before", with_hashes)
    for mmap in (False, True):
        before = load_prepared(tmp_path / "before", mmap=mmap)
        for split in SPLITS:
            np.testing.assert_array_equal(before.images[split], now.images[split])
            np.testing.assert_array_equal(before.labels[split], now.labels[split])
        assert before.shards("train")[0].file == "train-images.npy"
        assert (before.hashes is not None) == with_hashes
    np.save(tmp_path / "before" / "val-labels.npy", now.labels["val"][::-1])
    with pytest.raises(DataError, match="val split does not match its recorded sha256"):
        load_prepared(tmp_path / "before")
