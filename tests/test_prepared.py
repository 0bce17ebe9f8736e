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
from neuroflow.data.sources import DIGIT_CLASSES, Part, Source, load_source
from neuroflow.errors import DataError
from neuroflow.settings import PrepareConfig

KINDS = ("images", "labels", "hashes")
FILES = {f"{s}-{kind}.npy" for s in SPLITS for kind in KINDS} | {"metadata.json"}


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
        files = [tmp_path / f"{split}-images.npy", tmp_path / f"{split}-labels.npy"]
        labels = np.load(files[1])
        sha256 = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
        assert meta["splits"][split] == {
            "count": len(labels),
            "sha256": sha256,
            "digest": sha256[:16],
            "hashes_sha256": hashlib.sha256(
                (tmp_path / f"{split}-hashes.npy").read_bytes()
            ).hexdigest(),
            "class_counts": np.bincount(labels, minlength=10).tolist(),
        }


def test_normalization_matches_train_pixels(tmp_path: Path):
    meta = prepare(_source(), tmp_path, _config())
    pixels = np.load(tmp_path / "train-images.npy").astype(np.float64) / 255
    assert meta["normalization"]["mean"] == pytest.approx(pixels.mean(), abs=1e-4)
    assert meta["normalization"]["std"] == pytest.approx(pixels.std(), abs=1e-4)


def test_official_test_part_is_the_test_split(tmp_path: Path):
    source = _source(official_test=30)
    meta = prepare(source, tmp_path, _config())
    test_part = source.parts[1]
    assert meta["official_test"]
    assert meta["splits"]["test"]["count"] == 30
    assert meta["splits"]["train"]["count"] + meta["splits"]["val"]["count"] == 200
    np.testing.assert_array_equal(np.load(tmp_path / "test-images.npy"), test_part.images)
    np.testing.assert_array_equal(np.load(tmp_path / "test-labels.npy"), test_part.labels)


def test_class_counts_cover_every_class_even_when_a_split_lacks_some(tmp_path: Path):
    source = _source(official_test=30)
    source.parts[1].labels[:] = np.arange(30) % 5  # the test part holds classes 0..4 only
    meta = prepare(source, tmp_path, _config())
    assert meta["splits"]["test"]["class_counts"] == [6, 6, 6, 6, 6, 0, 0, 0, 0, 0]


def test_resizes_to_image_size(tmp_path: Path):
    meta = prepare(_source(), tmp_path, _config(image_size=28))
    assert meta["image_shape"] == [28, 28]
    assert meta["native_shape"] == [8, 8]
    for split in SPLITS:
        images = np.load(tmp_path / f"{split}-images.npy")
        assert images.shape == (meta["splits"][split]["count"], 28, 28)


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
            prepared.images[split], np.load(tmp_path / f"{split}-images.npy")
        )
        np.testing.assert_array_equal(
            prepared.labels[split], np.load(tmp_path / f"{split}-labels.npy")
        )
    assert isinstance(load_prepared(tmp_path, mmap=True).images["train"], np.memmap)


def test_load_prepared_detects_tampering(tmp_path: Path):
    prepare(_source(), tmp_path, _config())
    path = tmp_path / "val-images.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="val split does not match its recorded sha256"):
        load_prepared(tmp_path)


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


def test_changed_hashes_are_refused_and_format_1_reads_without_them(tmp_path: Path):
    prepare(_source(), tmp_path, _config())
    hashes = np.load(tmp_path / "val-hashes.npy")
    np.save(tmp_path / "val-hashes.npy", hashes[::-1])
    with pytest.raises(DataError, match="val image hashes does not match its recorded sha256"):
        load_prepared(tmp_path)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    meta["format"] = 1
    for split in SPLITS:
        del meta["splits"][split]["hashes_sha256"]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    assert load_prepared(tmp_path).hashes is None
